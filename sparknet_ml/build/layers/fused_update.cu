// sparknet_ml patch fused-solver-update: see include/caffe/fused_update.hpp.
#include <cmath>
#include <cstring>
#include <vector>

#include "caffe/fused_update.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

namespace {

const int kChunk = 16384;  // elements a block updates
const int kThreads = 256;

enum Rule { SGD, NESTEROV, ADAGRAD, RMSPROP, ADADELTA, ADAM };

template <typename Dtype>
struct FusedTensor {
  Dtype* data;
  Dtype* diff;
  Dtype* h;   // history (Adam: m)
  Dtype* h2;  // AdaDelta's update history, Adam's v; NULL otherwise
  float lr_mult;
  Dtype local_decay;
};

struct FusedChunk {
  int tensor;
  int begin;
  int end;
};

template <typename Dtype>
struct Scalars {
  Dtype rate;
  Dtype normalization;  // 1 / iter_size
  Dtype momentum;       // Adam: beta1
  Dtype momentum2;      // Adam: beta2
  Dtype delta;          // Adam: eps_hat
  Dtype rms_decay;
  Dtype correction;     // Adam's bias correction at this iteration
  bool l1;
  const Dtype* step;    // when not NULL: rate and correction from the device (a CUDA graph)
};

// Each rule is the body of Caffe's own kernel (sgd_solver.cu, nesterov_solver.cu, ...) for
// one element, its temporaries typed as there.
template <typename Dtype, int R>
__device__ __forceinline__ Dtype update_value(Dtype g, Dtype* h, Dtype* h2,
    const Scalars<Dtype>& s, Dtype local_rate) {
  if (R == SGD) {
    const Dtype momentum = s.momentum;
    // nvcc contracts Caffe's momentum*h[i] + local_rate*g[i] this way (checked on sm_90)
    return *h = fma(momentum, *h, local_rate*g);
  } else if (R == NESTEROV) {
    const Dtype momentum = s.momentum;
    float hi = *h;
    float hi_new = *h = momentum * hi + local_rate * g;
    return (1+momentum) * hi_new - momentum * hi;
  } else if (R == ADAGRAD) {
    const Dtype delta = s.delta;
    float gi = g;
    float hi = *h = *h + gi*gi;
    return local_rate * gi / (sqrt(hi) + delta);
  } else if (R == RMSPROP) {
    const Dtype rms_decay = s.rms_decay, delta = s.delta;
    float gi = g;
    float hi = *h = rms_decay*(*h) + (1-rms_decay)*gi*gi;
    return local_rate * g / (sqrt(hi) + delta);
  } else if (R == ADADELTA) {
    const Dtype momentum = s.momentum, delta = s.delta;
    float gi = g;
    float hi = *h = momentum * (*h) + (1-momentum) * gi * gi;
    gi = gi * sqrt((*h2 + delta) / (hi + delta));
    *h2 = momentum * (*h2) + (1-momentum) * gi * gi;
    return local_rate * gi;
  } else {  // ADAM
    const Dtype beta1 = s.momentum, beta2 = s.momentum2, eps_hat = s.delta;
    const Dtype corrected_local_rate = local_rate * s.correction;
    float gi = g;
    float mi = *h = (*h)*beta1 + gi*(1-beta1);
    float vi = *h2 = (*h2)*beta2 + gi*gi*(1-beta2);
    return corrected_local_rate * mi / (sqrt(vi) + eps_hat);
  }
}

template <typename Dtype, int R>
__global__ void FusedUpdateKernel(const FusedTensor<Dtype>* tensors,
    const FusedChunk* chunks, const Scalars<Dtype> s) {
  const FusedChunk c = chunks[blockIdx.x];
  const FusedTensor<Dtype> t = tensors[c.tensor];
  Scalars<Dtype> here = s;
  if (s.step) {
    here.rate = s.step[0];
    here.correction = s.step[1];
  }
  const Dtype local_rate = here.rate * t.lr_mult;  // as ComputeUpdateValue
  for (int i = c.begin + threadIdx.x; i < c.end; i += blockDim.x) {
    Dtype g = t.diff[i];
    if (s.normalization != Dtype(1)) {  // Normalize: caffe_gpu_scal
      g = s.normalization * g;
    }
    const Dtype w = t.data[i];
    if (t.local_decay) {  // Regularize: caffe_gpu_axpy of the data (L2) or its sign (L1)
      const Dtype x = s.l1 ? Dtype((Dtype(0) < w) - (w < Dtype(0))) : w;
      g = fma(t.local_decay, x, g);
    }
    Dtype* h2 = t.h2 ? t.h2 + i : NULL;
    g = update_value<Dtype, R>(g, t.h + i, h2, here, local_rate);
    t.diff[i] = g;
    t.data[i] = fma(Dtype(-1), g, w);  // Blob::Update: caffe_gpu_axpy(-1, diff, data)
  }
}

template <typename Dtype, int R>
void Launch(void* tensors, void* chunks, int count, const Scalars<Dtype>& s) {
  FusedUpdateKernel<Dtype, R><<<count, kThreads>>>(  // NOLINT
      static_cast<const FusedTensor<Dtype>*>(tensors),
      static_cast<const FusedChunk*>(chunks), s);
  CUDA_POST_KERNEL_CHECK;
}

}  // namespace

template <typename Dtype>
Dtype FusedUpdate<Dtype>::AdamCorrection(Dtype beta1, Dtype beta2, int iter) {
  const int t = iter + 1;  // as AdamSolver::ComputeUpdateValue
  const Dtype correction = std::sqrt(Dtype(1) - pow(beta2, t)) /
      (Dtype(1.) - pow(beta1, t));
  return correction;
}

template <typename Dtype>
FusedUpdate<Dtype>::~FusedUpdate() {
  cudaFree(tensors_);
  cudaFree(chunks_);
}

template <typename Dtype>
void FusedUpdate<Dtype>::Plan(const vector<Blob<Dtype>*>& params,
    const vector<float>& lr_mult, const vector<float>& decay_mult,
    const vector<shared_ptr<Blob<Dtype> > >& history, Dtype weight_decay,
    bool two_histories) {
  const int n = params.size();
  vector<Dtype*> pointers;
  vector<Dtype> values;
  vector<FusedTensor<Dtype> > tensors(n);
  vector<FusedChunk> chunks;
  for (int i = 0; i < n; ++i) {
    FusedTensor<Dtype>& t = tensors[i];
    t.data = params[i]->mutable_gpu_data();
    t.diff = params[i]->mutable_gpu_diff();
    t.h = history[i]->mutable_gpu_data();
    t.h2 = two_histories ? history[n + i]->mutable_gpu_data() : NULL;
    t.lr_mult = lr_mult[i];
    t.local_decay = weight_decay * decay_mult[i];  // as Regularize
    pointers.insert(pointers.end(), {t.data, t.diff, t.h, t.h2});
    values.insert(values.end(), {Dtype(t.lr_mult), t.local_decay});
    for (int begin = 0; begin < params[i]->count(); begin += kChunk) {
      chunks.push_back({i, begin, std::min(begin + kChunk, params[i]->count())});
    }
  }
  if (pointers == planned_ && values == planned_values_) { return; }
  cudaFree(tensors_);
  cudaFree(chunks_);
  tensors_ = chunks_ = NULL;
  CUDA_CHECK(cudaMalloc(&tensors_, std::max<size_t>(1, n) * sizeof(FusedTensor<Dtype>)));
  CUDA_CHECK(cudaMalloc(&chunks_, std::max<size_t>(1, chunks.size()) * sizeof(FusedChunk)));
  CUDA_CHECK(cudaMemcpy(tensors_, tensors.data(), n * sizeof(FusedTensor<Dtype>),
                        cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(chunks_, chunks.data(), chunks.size() * sizeof(FusedChunk),
                        cudaMemcpyHostToDevice));
  chunk_count_ = chunks.size();
  planned_.swap(pointers);
  planned_values_.swap(values);
}

template <typename Dtype>
bool FusedUpdate<Dtype>::Apply(const char* type, const SolverParameter& param,
    const vector<Blob<Dtype>*>& params, const vector<float>& lr_mult,
    const vector<float>& decay_mult, const vector<shared_ptr<Blob<Dtype> > >& history,
    Dtype rate, int iter, const Dtype* step) {
  static const char* const kTypes[] = {"SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta",
                                       "Adam"};
  int rule = -1;
  for (int r = 0; r < 6; ++r) {
    if (std::strcmp(type, kTypes[r]) == 0) { rule = r; }
  }
  const string& regularization = param.regularization_type();
  if (rule < 0 || (regularization != "L2" && regularization != "L1")) { return false; }
  const bool two_histories = rule == ADADELTA || rule == ADAM;
  if (history.size() != (two_histories ? 2 : 1) * params.size()) { return false; }
  Plan(params, lr_mult, decay_mult, history, Dtype(param.weight_decay()), two_histories);
  if (chunk_count_ == 0) { return true; }
  Scalars<Dtype> s;
  s.rate = rate;
  s.normalization = param.iter_size() == 1 ? Dtype(1) : Dtype(1.) / param.iter_size();
  s.momentum = param.momentum();
  s.momentum2 = param.momentum2();
  s.delta = param.delta();
  s.rms_decay = param.rms_decay();
  const Dtype beta1 = s.momentum, beta2 = s.momentum2;
  s.correction = AdamCorrection(beta1, beta2, iter);
  s.l1 = regularization == "L1";
  s.step = step;
  switch (rule) {
    case SGD: Launch<Dtype, SGD>(tensors_, chunks_, chunk_count_, s); break;
    case NESTEROV: Launch<Dtype, NESTEROV>(tensors_, chunks_, chunk_count_, s); break;
    case ADAGRAD: Launch<Dtype, ADAGRAD>(tensors_, chunks_, chunk_count_, s); break;
    case RMSPROP: Launch<Dtype, RMSPROP>(tensors_, chunks_, chunk_count_, s); break;
    case ADADELTA: Launch<Dtype, ADADELTA>(tensors_, chunks_, chunk_count_, s); break;
    default: Launch<Dtype, ADAM>(tensors_, chunks_, chunk_count_, s); break;
  }
  return true;
}

template class FusedUpdate<float>;
template class FusedUpdate<double>;

}  // namespace caffe
