// sparknet_ml patch cuda-graph-step: SGDSolver's replayed iterations (see
// include/caffe/graph_step.hpp).
#ifndef CPU_ONLY
#include <algorithm>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "caffe/graph_step.hpp"
#include "caffe/sgd_solvers.hpp"

namespace caffe {

namespace {

// Layer types whose GPU forward and backward only enqueue device work once their blobs
// live on the device (no host reads, no synchronous copies, no random numbers).
// SparkNetRows, SparkNetTransform and BatchReindex feed a resident block (the last with no
// gradient: its backward counts on the host).
const char* const kCapturable[] = {"Input", "Convolution", "Pooling", "ReLU", "Sigmoid",
    "TanH", "InnerProduct", "Softmax", "SoftmaxWithLoss", "LRN", "Concat", "Flatten",
    "Reshape", "Split", "Slice", "Silence", "SparkNetRows", "SparkNetTransform",
    "BatchReindex"};

template <typename Dtype>
std::string LayerRefusal(const Layer<Dtype>& layer, bool backward) {
  const std::string type = layer.type();
  const LayerParameter& p = layer.layer_param();
  const std::set<std::string> capturable(std::begin(kCapturable), std::end(kCapturable));
  const std::string named = "layer '" + p.name() + "' (" + type + ")";
  if (!capturable.count(type)) { return named; }
  if (type == "Pooling" && p.pooling_param().pool() == PoolingParameter_PoolMethod_STOCHASTIC) {
    return named + ", stochastic";
  }
  if (type == "LRN" && p.lrn_param().norm_region() != LRNParameter_NormRegion_ACROSS_CHANNELS) {
    return named + ", within a channel";
  }
  if (type == "BatchReindex" && backward) { return named + " with a gradient"; }
  if (type == "SoftmaxWithLoss" && p.loss_param().has_ignore_label()) {
    return named + " with ignore_label";  // its normaliser is counted on the host
  }
  return "";
}

}  // namespace

template <typename Dtype>
std::string SGDSolver<Dtype>::GraphRefusal() {
  const SolverParameter& p = this->param_;
  if (!Caffe::fused_update()) { return "the fused update is off"; }
  if (p.iter_size() != 1) { return "iter_size is not 1"; }
  if (p.clip_gradients() >= 0) { return "clip_gradients is set"; }
  if (p.debug_info()) { return "debug_info is set"; }
  if (p.snapshot()) { return "snapshot is set"; }
  if (p.test_interval() && !this->test_nets_.empty()) { return "test nets run every test_interval"; }
  if (!this->callbacks_.empty()) { return "the solver has callbacks"; }
  const string& regularization = p.regularization_type();
  if (regularization != "L1" && regularization != "L2") { return "regularization " + regularization; }
  const std::set<std::string> rules = {"SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta",
                                       "Adam"};
  if (!rules.count(this->type())) { return std::string("solver type ") + this->type(); }
  const vector<shared_ptr<Layer<Dtype> > >& layers = this->net_->layers();
  for (int i = 0; i < layers.size(); ++i) {
    const std::string refusal = LayerRefusal(*layers[i], this->net_->layer_need_backward()[i]);
    if (!refusal.empty()) { return refusal; }
  }
  return "";
}

template <typename Dtype>
bool SGDSolver<Dtype>::ReplayGraph(int start_iter, int stop_iter, int average_loss) {
  GraphStep<Dtype>& g = graph_;
  if (Caffe::mode() != Caffe::GPU || !Caffe::cuda_graph() || this->iter_ >= stop_iter) {
    return false;
  }
  if (!g.checked || !this->callbacks_.empty()) {
    g.refusal = GraphRefusal();
    if (!g.checked && !g.refusal.empty()) {
      LOG(INFO) << "Net " << this->net_->name() << " runs plain iterations, not a CUDA graph: "
                << g.refusal;
    }
    g.checked = true;
  }
  if (!g.refusal.empty() || !Caffe::fused_update()) { return false; }
  // Every blob onto the device (a host write goes up now, not inside the graph); their
  // addresses are the graph's key.
  const vector<shared_ptr<Blob<Dtype> > >& blobs = this->net_->blobs();
  const vector<Blob<Dtype>*>& params = this->net_->learnable_params();
  vector<const void*> key;
  for (int i = 0; i < blobs.size(); ++i) {
    key.push_back(blobs[i]->gpu_data());
    key.push_back(blobs[i]->gpu_diff());
  }
  for (int i = 0; i < params.size(); ++i) {
    key.push_back(params[i]->gpu_data());
    key.push_back(params[i]->gpu_diff());
  }
  for (int i = 0; i < history_.size(); ++i) { key.push_back(history_[i]->gpu_data()); }
  if (key != g.key) {
    // A graph is captured right after a plain iteration, which leaves every blob, algorithm
    // and workspace as the replays will find them.
    if (this->iter_ == start_iter) { return false; }
    g.Drop();
    g.Allocate();
    cudaStream_t stream = cudaStreamPerThread;
    cudaGraph_t graph;
    Caffe::set_graph_loss(g.loss);
    CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    CUDA_CHECK(cudaMemsetAsync(g.loss, 0, sizeof(Dtype), stream));
    this->net_->ClearParamDiffs();
    this->net_->ForwardBackward();
    // the net's loss, as Net::Forward sums it: each loss top times its weights (its diff)
    const vector<Dtype>& weights = this->net_->blob_loss_weights();
    for (int i = 0; i < blobs.size(); ++i) {
      if (weights[i]) {
        caffe_gpu_dot_add(blobs[i]->count(), blobs[i]->gpu_data(), blobs[i]->gpu_diff(), g.loss);
      }
    }
    fused_.Apply(this->type(), this->param_, params, this->net_->params_lr(),
                 this->net_->params_weight_decay(), history_, Dtype(0), this->iter_, g.step);
    caffe_gpu_record_loss(g.loss, g.losses, g.counter);
    const cudaError_t captured = cudaStreamEndCapture(stream, &graph);
    Caffe::set_graph_loss(NULL);
    CUDA_CHECK(captured);
    CUDA_CHECK(cudaGraphInstantiate(&g.exec, graph, 0));
    CUDA_CHECK(cudaGraphDestroy(graph));
    g.key = key;
  }
  cudaStream_t stream = cudaStreamPerThread;
  const Dtype beta1 = this->param_.momentum(), beta2 = this->param_.momentum2();
  while (this->iter_ < stop_iter) {
    const int chunk = std::min(stop_iter - this->iter_, int(GraphStep<Dtype>::kChunk));
    const int first = this->iter_;
    CUDA_CHECK(cudaMemsetAsync(g.counter, 0, sizeof(int), stream));
    for (int k = 0; k < chunk; ++k) {
      g.host_step[2 * k] = GetLearningRate();
      g.host_step[2 * k + 1] = FusedUpdate<Dtype>::AdamCorrection(beta1, beta2, this->iter_);
      CUDA_CHECK(cudaMemcpyAsync(g.step, g.host_step + 2 * k, 2 * sizeof(Dtype),
                                 cudaMemcpyHostToDevice, stream));
      CUDA_CHECK(cudaGraphLaunch(g.exec, stream));
      ++this->iter_;
      ++g.replays;
    }
    CUDA_CHECK(cudaMemcpyAsync(g.host_losses, g.losses, chunk * sizeof(Dtype),
                               cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    const int end = this->iter_;
    for (int k = 0; k < chunk; ++k) {  // as the plain iterations would have, in order
      this->iter_ = first + k;
      this->UpdateSmoothedLoss(g.host_losses[k], start_iter, average_loss);
      if (this->param_.display() && this->iter_ % this->param_.display() == 0) {
        LOG_IF(INFO, Caffe::root_solver()) << "Iteration " << this->iter_ << ", loss = "
                                           << this->smoothed_loss_;
      }
    }
    this->iter_ = end;
  }
  // The replays wrote the blobs on the device: their host copies are stale. (The loss
  // weights in the loss tops' diffs are only read, and SoftmaxWithLoss reads them on the
  // host while a graph is captured.)
  const vector<Dtype>& loss_weights = this->net_->blob_loss_weights();
  for (int i = 0; i < blobs.size(); ++i) {
    blobs[i]->mutable_gpu_data();
    if (!loss_weights[i]) { blobs[i]->mutable_gpu_diff(); }
  }
  for (int i = 0; i < params.size(); ++i) {
    params[i]->mutable_gpu_data();
    params[i]->mutable_gpu_diff();
  }
  for (int i = 0; i < history_.size(); ++i) { history_[i]->mutable_gpu_data(); }
  return true;
}

template std::string SGDSolver<float>::GraphRefusal();
template std::string SGDSolver<double>::GraphRefusal();
template bool SGDSolver<float>::ReplayGraph(int, int, int);
template bool SGDSolver<double>::ReplayGraph(int, int, int);

}  // namespace caffe
#endif  // CPU_ONLY
