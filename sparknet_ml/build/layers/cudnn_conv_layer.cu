// sparknet_ml patch cudnn-conv-one-call: see include/caffe/layers/cudnn_conv_layer.hpp.
#ifdef USE_CUDNN
#include <vector>

#include "caffe/layers/cudnn_conv_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

template <typename Dtype>
void CuDNNConvolutionLayer<Dtype>::Forward_gpu(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  cudnnHandle_t handle = cudnn::ThreadHandle();
  const Dtype* weight = this->blobs_[0]->gpu_data();
  for (int i = 0; i < bottom.size(); ++i) {
    CUDNN_CHECK(cudnnConvolutionForward(handle, cudnn::dataType<Dtype>::one,
        bottom_descs_[i], bottom[i]->gpu_data(), filter_desc_, weight, conv_descs_[i],
        fwd_algo_[i], cudnn::ThreadWorkspace(fwd_bytes_[i]), fwd_bytes_[i],
        cudnn::dataType<Dtype>::zero, top_descs_[i], top[i]->mutable_gpu_data()));
    if (this->bias_term_) {
      CUDNN_CHECK(cudnnAddTensor(handle, cudnn::dataType<Dtype>::one, bias_desc_,
          this->blobs_[1]->gpu_data(), cudnn::dataType<Dtype>::one, top_descs_[i],
          top[i]->mutable_gpu_data()));
    }
  }
}

template <typename Dtype>
void CuDNNConvolutionLayer<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  cudnnHandle_t handle = cudnn::ThreadHandle();
  for (int i = 0; i < top.size(); ++i) {
    const Dtype* top_diff = top[i]->gpu_diff();
    if (this->bias_term_ && this->param_propagate_down_[1]) {
      // the sum over each image's positions, then over the images: two bandwidth-bound
      // gemv calls, in the order Caffe's own layer sums (per image, then across)
      caffe_gpu_gemv<Dtype>(CblasNoTrans, this->num_ * this->num_output_,
          this->out_spatial_dim_, Dtype(1), top_diff, ones_.gpu_data(),
          Dtype(0), bias_partial_.mutable_gpu_data());
      caffe_gpu_gemv<Dtype>(CblasTrans, this->num_, this->num_output_, Dtype(1),
          bias_partial_.gpu_data(), ones_.gpu_data(), Dtype(1),
          this->blobs_[1]->mutable_gpu_diff());
    }
    if (this->param_propagate_down_[0]) {
      CUDNN_CHECK(cudnnConvolutionBackwardFilter(handle, cudnn::dataType<Dtype>::one,
          bottom_descs_[i], bottom[i]->gpu_data(), top_descs_[i], top_diff, conv_descs_[i],
          bwd_filter_algo_[i], cudnn::ThreadWorkspace(bwd_filter_bytes_[i]),
          bwd_filter_bytes_[i], cudnn::dataType<Dtype>::one, filter_desc_,
          this->blobs_[0]->mutable_gpu_diff()));
    }
    if (propagate_down[i]) {
      CUDNN_CHECK(cudnnConvolutionBackwardData(handle, cudnn::dataType<Dtype>::one,
          filter_desc_, this->blobs_[0]->gpu_data(), top_descs_[i], top_diff,
          conv_descs_[i], bwd_data_algo_[i], cudnn::ThreadWorkspace(bwd_data_bytes_[i]),
          bwd_data_bytes_[i], cudnn::dataType<Dtype>::zero, bottom_descs_[i],
          bottom[i]->mutable_gpu_diff()));
    }
  }
}

INSTANTIATE_LAYER_GPU_FUNCS(CuDNNConvolutionLayer);

}  // namespace caffe
#endif
