#include <vector>

#include "caffe/layers/sparknet_transform_layer.hpp"

namespace caffe {

template <typename Dtype>
__global__ void SparkNetTransformForward(const int count, const Dtype* block, const bool packed,
    const Dtype* draws, const Dtype* mean_image, const Dtype* mean_values, const Dtype scale,
    const int channels, const int height, const int width, const int stride, const int out_h,
    const int out_w, Dtype* out) {
  CUDA_KERNEL_LOOP(index, count) {
    const int w = index % out_w;
    const int h = (index / out_w) % out_h;
    const int c = (index / out_w / out_h) % channels;
    const int b = index / out_w / out_h / channels;
    const int row = static_cast<int>(draws[4 * b]);
    const int h_off = static_cast<int>(draws[4 * b + 1]);
    const int w_off = static_cast<int>(draws[4 * b + 2]);
    const bool mirror = draws[4 * b + 3] != 0;
    const int col = w_off + (mirror ? out_w - 1 - w : w);
    const long long in = (static_cast<long long>(row) * channels + c) * height * stride
                         + static_cast<long long>(h_off + h) * stride + col;
    Dtype x = packed ? static_cast<Dtype>(reinterpret_cast<const unsigned char*>(block)[in])
                     : block[in];
    if (mean_image) {
      x -= mean_image[(c * height + h_off + h) * width + col];
    } else if (mean_values) {
      x -= mean_values[c];
    }
    out[index] = x * scale;
  }
}

template <typename Dtype>
void SparkNetTransformLayer<Dtype>::Forward_gpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  if (!Caffe::graph_loss()) {  // no host read while a CUDA graph is captured
    CheckDraws(bottom);
  }
  const int count = top[0]->count();
  // NOLINT_NEXT_LINE(whitespace/operators)
  SparkNetTransformForward<Dtype><<<CAFFE_GET_BLOCKS(count), CAFFE_CUDA_NUM_THREADS>>>(
      count, bottom[0]->gpu_data(), packed_, bottom[1]->gpu_data(),
      bottom.size() == 3 ? bottom[2]->gpu_data() : NULL,
      mean_values_.count() ? mean_values_.gpu_data() : NULL, scale_, top[0]->shape(1),
      bottom[0]->shape(2), Width(bottom), RowStride(bottom), top[0]->shape(2),
      top[0]->shape(3), top[0]->mutable_gpu_data());
  CUDA_POST_KERNEL_CHECK;
}

template <typename Dtype>
void SparkNetTransformLayer<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  Backward_cpu(top, propagate_down, bottom);
}

INSTANTIATE_LAYER_GPU_FUNCS(SparkNetTransformLayer);

}  // namespace caffe
