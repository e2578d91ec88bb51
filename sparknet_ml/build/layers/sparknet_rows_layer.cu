#include <vector>

#include "caffe/layers/sparknet_rows_layer.hpp"

namespace caffe {

// One block: its threads copy batch *cursor, then one of them advances the cursor.
template <typename Dtype>
__global__ void SparkNetRowsForward(const int count, const int batches, const Dtype* rows,
    int* cursor, Dtype* out) {
  const Dtype* batch = rows + static_cast<long long>(*cursor) * count;
  for (int i = threadIdx.x; i < count; i += blockDim.x) {
    out[i] = batch[i];
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    *cursor = (*cursor + 1) % batches;
  }
}

template <typename Dtype>
void SparkNetRowsLayer<Dtype>::Forward_gpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const int count = top[0]->count();
  // NOLINT_NEXT_LINE(whitespace/operators)
  SparkNetRowsForward<Dtype><<<1, CAFFE_CUDA_NUM_THREADS>>>(count,
      bottom[0]->count() / count, bottom[0]->gpu_data(), cursor_.mutable_gpu_data(),
      top[0]->mutable_gpu_data());
  CUDA_POST_KERNEL_CHECK;
}

INSTANTIATE_LAYER_GPU_FORWARD(SparkNetRowsLayer);

}  // namespace caffe
