// sparknet_ml patch cudnn-conv-one-call: Caffe's cuDNN convolution, rewritten.
//
// BVLC's layer issued one cuDNN call per group, each group on its own three streams, handles
// and workspaces, and joined them with an empty kernel on the default stream. Here a layer
// makes one call per pass (cudnnSetConvolutionGroupCount covers the groups), on the calling
// thread's one cuDNN handle and the default stream, with one workspace per thread and device
// shared by every convolution (they run one after the other). The algorithms are timed with
// cudnnFind* over all of them, once per input shape and math mode (as PyTorch's
// cudnn.benchmark), and the fastest whose workspace fits kWorkspaceLimit is kept. The bias
// gradient is two cuBLAS gemv calls (positions, then images): cuDNN's
// cudnnConvolutionBackwardBias took 18% of a TF32 CaffeNet iteration on an H200
// (benchmarks/gpu_step_profile.py).
#ifndef CAFFE_CUDNN_CONV_LAYER_HPP_
#define CAFFE_CUDNN_CONV_LAYER_HPP_

#include <string>
#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layer.hpp"
#include "caffe/proto/caffe.pb.h"

#include "caffe/layers/conv_layer.hpp"

namespace caffe {

#ifdef USE_CUDNN
template <typename Dtype>
class CuDNNConvolutionLayer : public ConvolutionLayer<Dtype> {
 public:
  explicit CuDNNConvolutionLayer(const LayerParameter& param)
      : ConvolutionLayer<Dtype>(param), handles_setup_(false) {}
  virtual void LayerSetUp(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Reshape(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual ~CuDNNConvolutionLayer();

  /// The most workspace one convolution may use (bytes); one buffer of at most this size
  /// per thread and device serves every layer.
  static const size_t kWorkspaceLimit = size_t(1) << 30;

 protected:
  virtual void Forward_gpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Backward_gpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);

  bool handles_setup_;
  // per bottom: the algorithms and the workspace each needs
  vector<cudnnConvolutionFwdAlgo_t> fwd_algo_;
  vector<cudnnConvolutionBwdFilterAlgo_t> bwd_filter_algo_;
  vector<cudnnConvolutionBwdDataAlgo_t> bwd_data_algo_;
  vector<size_t> fwd_bytes_, bwd_filter_bytes_, bwd_data_bytes_;
  vector<string> algo_keys_;  // the shape and math mode of the last Find

  vector<cudnnTensorDescriptor_t> bottom_descs_, top_descs_;
  cudnnTensorDescriptor_t bias_desc_;
  Blob<Dtype> bias_partial_;  // the bias gradient per image (num x num_output)
  Blob<Dtype> ones_;          // max(num, output positions) ones
  cudnnFilterDescriptor_t filter_desc_;
  vector<cudnnConvolutionDescriptor_t> conv_descs_;
};

namespace cudnn {
/// The calling thread's cuDNN handle for the current device (created on first use).
cudnnHandle_t ThreadHandle();
/// The calling thread's workspace for the current device, grown to at least bytes; NULL
/// when it cannot be grown (the caller then chooses algorithms that need less).
void* ThreadWorkspace(size_t bytes);
}  // namespace cudnn
#endif

}  // namespace caffe

#endif  // CAFFE_CUDNN_CONV_LAYER_HPP_
