// sparknet_ml patch cuda-graph-step: a training iteration captured once as a CUDA graph and
// replayed, for nets whose every layer runs on the device without the host.
//
// Solver::Step(n) runs its first iteration as Caffe does; when the solver, its net and the
// blobs' device addresses allow it, the remaining iterations replay a graph of one iteration
// (clear the gradients, forward, backward, the fused update; see fused_update.hpp) captured
// on the thread's default stream (the build compiles with the per-thread default stream).
// Before each replay the host writes that iteration's learning rate (and Adam's correction)
// into a device buffer; each replay writes its loss into a device array that is read once
// per n iterations, so the smoothed loss is Caffe's. A net or solver the graph cannot hold
// runs Caffe's plain iterations, and the reason is logged once.
#ifndef CAFFE_GRAPH_STEP_HPP_
#define CAFFE_GRAPH_STEP_HPP_
#ifndef CPU_ONLY

#include <string>
#include <vector>

#include "caffe/common.hpp"

namespace caffe {

/// *out += sum(x[i] * y[i]) on the device (a loss top's weighted loss while capturing).
template <typename Dtype>
void caffe_gpu_dot_add(int n, const Dtype* x, const Dtype* y, Dtype* out);

/// *out = sum(x[i]) / divisor on the device (SoftmaxWithLoss's loss while capturing).
template <typename Dtype>
void caffe_gpu_sum_divided(int n, const Dtype* x, Dtype divisor, Dtype* out);

/// losses[*counter] = *loss; ++*counter (the end of a captured iteration).
template <typename Dtype>
void caffe_gpu_record_loss(const Dtype* loss, Dtype* losses, int* counter);

/// The device and pinned buffers and the executable graph of one solver.
template <typename Dtype>
struct GraphStep {
  static const int kChunk = 1024;  // replays between two reads of the losses
  GraphStep() : exec(NULL), loss(NULL), step(NULL), losses(NULL), counter(NULL),
                host_step(NULL), host_losses(NULL), checked(false), replays(0) {}
  ~GraphStep();
  void Allocate();
  void Drop();  // the executable graph, e.g. when a blob moved

  cudaGraphExec_t exec;
  vector<const void*> key;  // the device addresses the graph was captured with
  Dtype* loss;              // device: this iteration's loss
  Dtype* step;              // device: this iteration's rate and Adam correction
  Dtype* losses;            // device: kChunk losses
  int* counter;             // device: the next slot of losses
  Dtype* host_step;         // pinned: 2 x kChunk
  Dtype* host_losses;       // pinned: kChunk
  bool checked;             // whether refusal below was worked out
  std::string refusal;      // why this solver's iterations are not captured ("" if they are)
  long replays;             // iterations run as replays so far

  DISABLE_COPY_AND_ASSIGN(GraphStep);
};

}  // namespace caffe

#endif  // CPU_ONLY
#endif  // CAFFE_GRAPH_STEP_HPP_
