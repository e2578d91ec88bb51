// sparknet_ml patch pycaffe-flat-state: a solver's learnable blobs and history as one
// contiguous device buffer (the blobs' GPU data point into it, as parallel.cpp's
// apply_buffers does for P2PSync) mirrored by one pinned host buffer, so that a SparkNet
// state crosses between host and device as one asynchronous copy each way.
//
// Order: every layer's blobs in net order (pycaffe's Net.params), then the solver's history
// (sparknet_ml.engine.state.flatten's layout). A FlatState lives exactly as long as its
// solver (pycaffe keeps it in the solver's attributes): the blobs point into its memory.
#ifndef CAFFE_FLAT_STATE_HPP_
#define CAFFE_FLAT_STATE_HPP_
#ifndef CPU_ONLY

#include <set>
#include <stdexcept>
#include <vector>

#include "caffe/blob.hpp"
#include "caffe/sgd_solvers.hpp"
#include "caffe/solver.hpp"

namespace caffe {

template <typename Dtype>
class FlatState {
 public:
  explicit FlatState(Solver<Dtype>* solver) : size_(0), device_(NULL), host_(NULL) {
    const vector<shared_ptr<Layer<Dtype> > >& layers = solver->net()->layers();
    for (int i = 0; i < layers.size(); ++i) {
      for (int j = 0; j < layers[i]->blobs().size(); ++j) {
        blobs_.push_back(layers[i]->blobs()[j].get());
      }
    }
    SGDSolver<Dtype>* sgd = dynamic_cast<SGDSolver<Dtype>*>(solver);
    if (!sgd) { throw std::runtime_error("this solver keeps no history"); }
    for (int i = 0; i < sgd->history().size(); ++i) {
      blobs_.push_back(sgd->history()[i].get());
    }
    std::set<const void*> seen;
    for (int i = 0; i < blobs_.size(); ++i) {
      if (!seen.insert(blobs_[i]->data().get()).second) {
        throw std::runtime_error("blobs shared between layers have no place of their own");
      }
      size_ += blobs_[i]->count();
    }
    CUDA_CHECK(cudaMalloc(&device_, bytes()));
    CUDA_CHECK(cudaMallocHost(&host_, bytes()));
    Dtype* at = device_;
    for (int i = 0; i < blobs_.size(); ++i) {
      CUDA_CHECK(cudaMemcpy(at, blobs_[i]->gpu_data(), blobs_[i]->count() * sizeof(Dtype),
                            cudaMemcpyDeviceToDevice));
      blobs_[i]->data()->set_gpu_data(at);
      at += blobs_[i]->count();
    }
  }

  ~FlatState() {
    cudaFree(device_);
    cudaFreeHost(host_);
  }

  /// The device buffer into the pinned host buffer: one copy.
  void to_host() {
    for (int i = 0; i < blobs_.size(); ++i) {
      blobs_[i]->gpu_data();  // a blob written on the host goes to its place first
    }
    CUDA_CHECK(cudaMemcpyAsync(host_, device_, bytes(), cudaMemcpyDeviceToHost, 0));
    CUDA_CHECK(cudaStreamSynchronize(0));
  }

  /// The pinned host buffer into the device buffer: one copy; the blobs' host copies are
  /// stale after it.
  void from_host() {
    CUDA_CHECK(cudaMemcpyAsync(device_, host_, bytes(), cudaMemcpyHostToDevice, 0));
    CUDA_CHECK(cudaStreamSynchronize(0));
    // Pointing each blob at its own place again marks its device copy as the current one
    // without copying anything (mutable_gpu_data would first upload a host copy that
    // Python had written or read through Blob.data).
    Dtype* at = device_;
    for (int i = 0; i < blobs_.size(); ++i) {
      blobs_[i]->data()->set_gpu_data(at);
      at += blobs_[i]->count();
    }
  }

  size_t size() const { return size_; }
  Dtype* host() const { return host_; }

 private:
  size_t bytes() const { return size_ * sizeof(Dtype); }

  std::vector<Blob<Dtype>*> blobs_;
  size_t size_;
  Dtype* device_;
  Dtype* host_;
};

}  // namespace caffe

#endif  // CPU_ONLY
#endif  // CAFFE_FLAT_STATE_HPP_
