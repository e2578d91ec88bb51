// sparknet_ml patch cudnn-conv-one-call: see include/caffe/layers/cudnn_conv_layer.hpp.
#ifdef USE_CUDNN
#include <algorithm>
#include <map>
#include <sstream>
#include <vector>

#include "caffe/layers/cudnn_conv_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

namespace cudnn {

namespace {
struct Workspace {
  void* data = NULL;
  size_t bytes = 0;
};

struct PerThread {
  std::map<int, cudnnHandle_t> handles;
  std::map<int, Workspace> workspaces;
  ~PerThread() {
    for (auto& h : handles) { cudnnDestroy(h.second); }
    for (auto& w : workspaces) { cudaFree(w.second.data); }
  }
};

PerThread& Here() {
  static thread_local PerThread here;
  return here;
}

int CurrentDevice() {
  int device;
  CUDA_CHECK(cudaGetDevice(&device));
  return device;
}
}  // namespace

cudnnHandle_t ThreadHandle() {
  std::map<int, cudnnHandle_t>& handles = Here().handles;
  const int device = CurrentDevice();
  auto found = handles.find(device);
  if (found != handles.end()) { return found->second; }
  cudnnHandle_t handle;
  CUDNN_CHECK(cudnnCreate(&handle));
  CUDNN_CHECK(cudnnSetStream(handle, cudaStreamPerThread));  // see cuda-graph-step
  handles[device] = handle;
  return handle;
}

void* ThreadWorkspace(size_t bytes) {
  Workspace& space = Here().workspaces[CurrentDevice()];
  if (bytes > space.bytes) {
    cudaFree(space.data);  // waits for the work that used it
    space.data = NULL;
    space.bytes = 0;
    if (cudaMalloc(&space.data, bytes) != cudaSuccess) {
      cudaGetLastError();  // clear the error: the caller falls back
      space.data = NULL;
      return NULL;
    }
    space.bytes = bytes;
  }
  return bytes ? space.data : NULL;
}

}  // namespace cudnn

template <typename Dtype>
void CuDNNConvolutionLayer<Dtype>::LayerSetUp(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  ConvolutionLayer<Dtype>::LayerSetUp(bottom, top);
  const int* kernel_shape_data = this->kernel_shape_.cpu_data();
  cudnn::createFilterDesc<Dtype>(&filter_desc_, this->num_output_,
      this->channels_ / this->group_, kernel_shape_data[0], kernel_shape_data[1]);
  for (int i = 0; i < bottom.size(); i++) {
    cudnnTensorDescriptor_t bottom_desc, top_desc;
    cudnn::createTensor4dDesc<Dtype>(&bottom_desc);
    cudnn::createTensor4dDesc<Dtype>(&top_desc);
    bottom_descs_.push_back(bottom_desc);
    top_descs_.push_back(top_desc);
    cudnnConvolutionDescriptor_t conv_desc;
    cudnn::createConvolutionDesc<Dtype>(&conv_desc);
    conv_descs_.push_back(conv_desc);
  }
  fwd_algo_.resize(bottom.size());
  bwd_filter_algo_.resize(bottom.size());
  bwd_data_algo_.resize(bottom.size());
  fwd_bytes_.assign(bottom.size(), 0);
  bwd_filter_bytes_.assign(bottom.size(), 0);
  bwd_data_bytes_.assign(bottom.size(), 0);
  algo_keys_.resize(bottom.size());
  if (this->bias_term_) {
    cudnn::createTensor4dDesc<Dtype>(&bias_desc_);
    cudnn::setTensor4dDesc<Dtype>(&bias_desc_, 1, this->num_output_, 1, 1);
  }
  handles_setup_ = true;
}

template <typename Dtype>
void CuDNNConvolutionLayer<Dtype>::Reshape(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  ConvolutionLayer<Dtype>::Reshape(bottom, top);
  CHECK_EQ(2, this->num_spatial_axes_)
      << "CuDNNConvolution input must have 2 spatial axes "
      << "(e.g., height and width). "
      << "Use 'engine: CAFFE' for general ND convolution.";
  if (this->bias_term_) {
    bias_partial_.Reshape(vector<int>(1, this->num_ * this->num_output_));
    const int ones = std::max(this->num_, this->out_spatial_dim_);
    if (ones_.count() != ones) {  // filled when the shape changes, not per iteration
      ones_.Reshape(vector<int>(1, ones));
      caffe_set(ones, Dtype(1), ones_.mutable_cpu_data());
    }
  }
  const int height = bottom[0]->shape(this->channel_axis_ + 1);
  const int width = bottom[0]->shape(this->channel_axis_ + 2);
  const int height_out = top[0]->shape(this->channel_axis_ + 1);
  const int width_out = top[0]->shape(this->channel_axis_ + 2);
  const int* pad_data = this->pad_.cpu_data();
  const int* stride_data = this->stride_.cpu_data();
  cudnnHandle_t handle = cudnn::ThreadHandle();
  const string& name = this->layer_param_.name();
  for (int i = 0; i < bottom.size(); i++) {
    cudnn::setTensor4dDesc<Dtype>(&bottom_descs_[i], this->num_, this->channels_,
        height, width);
    cudnn::setTensor4dDesc<Dtype>(&top_descs_[i], this->num_, this->num_output_,
        height_out, width_out);
    cudnn::setConvolutionDesc<Dtype>(&conv_descs_[i], bottom_descs_[i], filter_desc_,
        pad_data[0], pad_data[1], stride_data[0], stride_data[1]);
    CUDNN_CHECK(cudnnSetConvolutionGroupCount(conv_descs_[i], this->group_));
    CUDNN_CHECK(cudnnSetConvolutionMathType(conv_descs_[i],
        Caffe::tf32() ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH));
    std::ostringstream key;
    key << this->num_ << "x" << this->channels_ << "x" << height << "x" << width
        << (Caffe::tf32() ? " tf32" : " fp32");
    if (algo_keys_[i] == key.str()) { continue; }
    algo_keys_[i] = key.str();
    int found = 0;
    cudnnConvolutionFwdAlgoPerf_t fwd[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithm(handle, bottom_descs_[i],
        filter_desc_, conv_descs_[i], top_descs_[i], CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
        &found, fwd));
    int fwd_found = found;
    cudnnConvolutionBwdFilterAlgoPerf_t bwf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithm(handle, bottom_descs_[i],
        top_descs_[i], conv_descs_[i], filter_desc_, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
        &found, bwf));
    int bwf_found = found;
    cudnnConvolutionBwdDataAlgoPerf_t bwd[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithm(handle, filter_desc_,
        top_descs_[i], conv_descs_[i], bottom_descs_[i], CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
        &found, bwd));
    int bwd_found = found;
    // The fastest within the limit; where the shared workspace cannot grow that far, the
    // fastest within what it holds.
    for (size_t limit = kWorkspaceLimit; ; ) {
      const cudnnConvolutionFwdAlgoPerf_t& f =
          cudnn::fastestWithin(fwd, fwd_found, limit, name, "forward");
      const cudnnConvolutionBwdFilterAlgoPerf_t& bf =
          cudnn::fastestWithin(bwf, bwf_found, limit, name, "backward filter");
      const cudnnConvolutionBwdDataAlgoPerf_t& bd =
          cudnn::fastestWithin(bwd, bwd_found, limit, name, "backward data");
      const size_t need = std::max(f.memory, std::max(bf.memory, bd.memory));
      if (need == 0 || cudnn::ThreadWorkspace(need)) {
        fwd_algo_[i] = f.algo;
        bwd_filter_algo_[i] = bf.algo;
        bwd_data_algo_[i] = bd.algo;
        fwd_bytes_[i] = f.memory;
        bwd_filter_bytes_[i] = bf.memory;
        bwd_data_bytes_[i] = bd.memory;
        DLOG(INFO) << name << " " << key.str() << ": algorithms " << f.algo << " "
                   << bf.algo << " " << bd.algo << ", workspace " << need;
        break;
      }
      LOG(WARNING) << "Layer " << name << ": no " << need << " bytes of GPU memory for "
                   << "the fastest convolution's workspace; choosing within " << need / 2;
      limit = need / 2;
    }
  }
}

template <typename Dtype>
CuDNNConvolutionLayer<Dtype>::~CuDNNConvolutionLayer() {
  if (!handles_setup_) { return; }
  for (int i = 0; i < bottom_descs_.size(); i++) {
    cudnnDestroyTensorDescriptor(bottom_descs_[i]);
    cudnnDestroyTensorDescriptor(top_descs_[i]);
    cudnnDestroyConvolutionDescriptor(conv_descs_[i]);
  }
  if (this->bias_term_) {
    cudnnDestroyTensorDescriptor(bias_desc_);
  }
  cudnnDestroyFilterDescriptor(filter_desc_);
}

INSTANTIATE_CLASS(CuDNNConvolutionLayer);

}   // namespace caffe
#endif
