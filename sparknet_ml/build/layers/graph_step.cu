// sparknet_ml patch cuda-graph-step: the device helpers (see include/caffe/graph_step.hpp).
#include "caffe/graph_step.hpp"

namespace caffe {

namespace {
const int kThreads = 256;

template <typename Dtype>
__device__ Dtype BlockSum(Dtype value) {
  __shared__ Dtype partial[kThreads];
  partial[threadIdx.x] = value;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) { partial[threadIdx.x] += partial[threadIdx.x + half]; }
    __syncthreads();
  }
  return partial[0];
}

template <typename Dtype>
__global__ void DotAdd(int n, const Dtype* x, const Dtype* y, Dtype* out) {
  Dtype sum = 0;
  for (int i = threadIdx.x; i < n; i += kThreads) { sum += x[i] * y[i]; }
  sum = BlockSum(sum);
  if (threadIdx.x == 0) { *out += sum; }
}

template <typename Dtype>
__global__ void SumDivided(int n, const Dtype* x, Dtype divisor, Dtype* out) {
  Dtype sum = 0;
  for (int i = threadIdx.x; i < n; i += kThreads) { sum += x[i]; }
  sum = BlockSum(sum);
  if (threadIdx.x == 0) { *out = sum / divisor; }
}

template <typename Dtype>
__global__ void RecordLoss(const Dtype* loss, Dtype* losses, int* counter) {
  losses[*counter] = *loss;
  ++*counter;
}
}  // namespace

template <typename Dtype>
void caffe_gpu_dot_add(int n, const Dtype* x, const Dtype* y, Dtype* out) {
  DotAdd<Dtype><<<1, kThreads>>>(n, x, y, out);  // NOLINT
  CUDA_POST_KERNEL_CHECK;
}

template <typename Dtype>
void caffe_gpu_sum_divided(int n, const Dtype* x, Dtype divisor, Dtype* out) {
  SumDivided<Dtype><<<1, kThreads>>>(n, x, divisor, out);  // NOLINT
  CUDA_POST_KERNEL_CHECK;
}

template <typename Dtype>
void caffe_gpu_record_loss(const Dtype* loss, Dtype* losses, int* counter) {
  RecordLoss<Dtype><<<1, 1>>>(loss, losses, counter);  // NOLINT
  CUDA_POST_KERNEL_CHECK;
}

template <typename Dtype>
GraphStep<Dtype>::~GraphStep() {
  Drop();
  cudaFree(loss);
  cudaFree(step);
  cudaFree(losses);
  cudaFree(counter);
  cudaFreeHost(host_step);
  cudaFreeHost(host_losses);
}

template <typename Dtype>
void GraphStep<Dtype>::Allocate() {
  if (loss) { return; }
  CUDA_CHECK(cudaMalloc(&loss, sizeof(Dtype)));
  CUDA_CHECK(cudaMalloc(&step, 2 * sizeof(Dtype)));
  CUDA_CHECK(cudaMalloc(&losses, kChunk * sizeof(Dtype)));
  CUDA_CHECK(cudaMalloc(&counter, sizeof(int)));
  CUDA_CHECK(cudaMallocHost(&host_step, 2 * kChunk * sizeof(Dtype)));
  CUDA_CHECK(cudaMallocHost(&host_losses, kChunk * sizeof(Dtype)));
}

template <typename Dtype>
void GraphStep<Dtype>::Drop() {
  if (exec) { cudaGraphExecDestroy(exec); }
  exec = NULL;
  key.clear();
}

#define INSTANTIATE_GRAPH_HELPERS(Dtype) \
  template void caffe_gpu_dot_add<Dtype>(int, const Dtype*, const Dtype*, Dtype*); \
  template void caffe_gpu_sum_divided<Dtype>(int, const Dtype*, Dtype, Dtype*); \
  template void caffe_gpu_record_loss<Dtype>(const Dtype*, Dtype*, int*); \
  template struct GraphStep<Dtype>;
INSTANTIATE_GRAPH_HELPERS(float)
INSTANTIATE_GRAPH_HELPERS(double)

}  // namespace caffe
