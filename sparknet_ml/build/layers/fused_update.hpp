// sparknet_ml patch fused-solver-update: a GPU solver update in one kernel launch.
//
// Caffe's SGDSolver::ApplyUpdate launches, for every learnable blob, a weight-decay axpy, the
// solver type's update kernel and Blob::Update's axpy (three launches per blob: 384 for
// GoogLeNet's 128 blobs). FusedUpdate does all of it for every blob in one launch over a
// table of (blob, chunk) pairs, PyTorch's multi_tensor_apply scheme, with each element's
// arithmetic written as Caffe's kernels write it: iter_size normalisation, L2 or L1 decay
// (decay_mult), the update of SGD, Nesterov, AdaGrad, RMSProp, AdaDelta or Adam (lr_mult),
// the update value left in the diff and data -= diff. Gradient clipping runs before it as
// Caffe's. Caffe::set_fused_update(false) keeps Caffe's per-blob launches.
#ifndef CAFFE_FUSED_UPDATE_HPP_
#define CAFFE_FUSED_UPDATE_HPP_
#ifndef CPU_ONLY

#include <vector>

#include "caffe/blob.hpp"
#include "caffe/proto/caffe.pb.h"

namespace caffe {

template <typename Dtype>
class FusedUpdate {
 public:
  FusedUpdate() : tensors_(NULL), chunks_(NULL), chunk_count_(0) {}
  ~FusedUpdate();

  /// One update of every learnable blob as the solver named type would make it; false
  /// (nothing done) for a solver type or regularization this kernel does not know. With
  /// step (device memory) the rate and Adam's correction are read from step[0], step[1]
  /// when the kernel runs (a CUDA graph replays it), not taken from rate and iter.
  bool Apply(const char* type, const SolverParameter& param,
      const vector<Blob<Dtype>*>& params, const vector<float>& lr_mult,
      const vector<float>& decay_mult, const vector<shared_ptr<Blob<Dtype> > >& history,
      Dtype rate, int iter, const Dtype* step = NULL);

  /// Adam's bias correction at iteration iter, as AdamSolver computes it.
  static Dtype AdamCorrection(Dtype beta1, Dtype beta2, int iter);

 private:
  void Plan(const vector<Blob<Dtype>*>& params, const vector<float>& lr_mult,
      const vector<float>& decay_mult, const vector<shared_ptr<Blob<Dtype> > >& history,
      Dtype weight_decay, bool two_histories);

  void* tensors_;  // device: one FusedTensor per blob
  void* chunks_;   // device: one FusedChunk per block of the launch
  int chunk_count_;
  vector<Dtype*> planned_;  // the pointers and values the device tables were made from
  vector<Dtype> planned_values_;

  DISABLE_COPY_AND_ASSIGN(FusedUpdate);
};

}  // namespace caffe

#endif  // CPU_ONLY
#endif  // CAFFE_FUSED_UPDATE_HPP_
