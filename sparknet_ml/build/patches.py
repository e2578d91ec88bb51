"""Named compatibility patches applied to Caffe's sources before they are compiled.

Each patch is a list of exact text edits. An edit must match exactly once in the pristine
source, otherwise :func:`apply_patches` fails loudly: a patch never applies "a bit".
The digest of this module is part of the wheel cache key (see :mod:`sparknet_ml.build.cache`),
so changing any patch rebuilds Caffe.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

# (source file stem, class, indentation of its STUB_GPU block)
_FALLBACK_LAYERS = (("hardsigmoid", "HardSigmoidLayer", ""), ("hardswish", "HardSwishLayer", ""),
                    ("maxunpool", "MaxUnPoolLayer", ""), ("relu6", "ReLU6Layer", ""),
                    ("pixelshuffle", "PixelShuffleLayer", "    "),
                    ("upsample", "UpsampleLayer", "    "))

_CPU_FALLBACK_MACRO = r"""
// sparknet_ml patch cpu-fallback-for-gpu-less-layers: GPU methods that run the CPU code,
// for layers that declare Forward_gpu/Backward_gpu but ship no .cu file.
#define CPU_FALLBACK_GPU(classname) \
template <typename Dtype> \
void classname<Dtype>::Forward_gpu(const vector<Blob<Dtype>*>& bottom, \
    const vector<Blob<Dtype>*>& top) { Forward_cpu(bottom, top); } \
template <typename Dtype> \
void classname<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top, \
    const vector<bool>& propagate_down, \
    const vector<Blob<Dtype>*>& bottom) { Backward_cpu(top, propagate_down, bottom); }

#endif  // CAFFE_UTIL_DEVICE_ALTERNATE_H_
"""

_FASTEST_WITHIN = """
// sparknet_ml patch cudnn9: the fastest algorithm cudnnFind* measured (it sorts them by
// time) whose workspace fits in limit bytes.
template <typename Perf>
inline Perf fastestWithin(const Perf* perf, int count, size_t limit,
    const std::string& layer, const char* pass) {
  for (int k = 0; k < count; ++k) {
    if (perf[k].status == CUDNN_STATUS_SUCCESS && perf[k].memory <= limit) {
      return perf[k];
    }
  }
  LOG(FATAL) << "Layer " << layer << ": no cuDNN " << pass
             << " convolution algorithm runs within " << limit << " bytes of workspace";
  return perf[0];
}

}  // namespace cudnn
"""

_TF32_SWITCH = """  inline static void set_mode(Brew mode) { Get().mode_ = mode; }
  // sparknet_ml patch tf32-switch: TensorFloat-32 tensor-core math for cuBLAS and cuDNN
  // convolutions in this thread; off (IEEE fp32) by default.
  inline static void set_tf32(bool on) {
    Get().tf32_ = on;
#ifndef CPU_ONLY
    if (Get().cublas_handle_) {
      CUBLAS_CHECK(cublasSetMathMode(Get().cublas_handle_,
          on ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    }
#endif
  }
  inline static bool tf32() { return Get().tf32_; }
"""

_UPGRADE_PROTO = r"""// sparknet_ml patch pycaffe-upgrade-proto: Caffe's own upgrade of deprecated net and
// solver formats, from serialized message to serialized message, with what was upgraded.
static std::string MessageBytes(bp::object data) {
  char* buffer;
  Py_ssize_t size;
  if (PyBytes_AsStringAndSize(data.ptr(), &buffer, &size) != 0) {
    bp::throw_error_already_set();
  }
  return std::string(buffer, size);
}

static bp::object SerializedMessage(const google::protobuf::Message& message) {
  std::string out;
  message.SerializeToString(&out);
  return bp::object(bp::handle<>(PyBytes_FromStringAndSize(out.data(), out.size())));
}

// (upgraded bytes, [what was upgraded], whether Caffe upgraded without problems)
bp::tuple UpgradeNetParam(bp::object data) {
  NetParameter param;
  if (!param.ParseFromString(MessageBytes(data))) {
    throw std::runtime_error("not a serialized NetParameter");
  }
  bp::list upgraded;
  if (NetNeedsV0ToV1Upgrade(param)) { upgraded.append("V0 layer parameters"); }
  if (NetNeedsDataUpgrade(param)) { upgraded.append("data transformation fields"); }
  if (NetNeedsV1ToV2Upgrade(param)) { upgraded.append("V1 'layers'"); }
  if (NetNeedsInputUpgrade(param)) { upgraded.append("'input' fields"); }
  if (NetNeedsBatchNormUpgrade(param)) { upgraded.append("BatchNorm 'param'"); }
  bool clean = UpgradeNetAsNeeded(param.name(), &param);
  return bp::make_tuple(SerializedMessage(param), upgraded, clean);
}

bp::tuple UpgradeSolverParam(bp::object data) {
  SolverParameter param;
  if (!param.ParseFromString(MessageBytes(data))) {
    throw std::runtime_error("not a serialized SolverParameter");
  }
  bp::list upgraded;
  if (SolverNeedsTypeUpgrade(param)) { upgraded.append("'solver_type'"); }
  bool clean = UpgradeSolverAsNeeded("solver", &param);
  return bp::make_tuple(SerializedMessage(param), upgraded, clean);
}

"""

# Layers whose default engine becomes cuDNN in a cuDNN build (Pooling: AVE only, by Caffe's
# own factory rule; LRN and Convolution are edited separately).
_CUDNN_DEFAULT_ENGINES = ("Pooling", "ReLU", "Sigmoid", "Softmax", "TanH")


@dataclass(frozen=True)
class Edit:
    """Replace ``old`` (which must occur exactly once) by ``new`` in ``path``."""

    path: str
    old: str
    new: str


@dataclass(frozen=True)
class Patch:
    """A named fix: text edits, then files removed (the recipe regenerates them, or the patch
    replaces them), then files added (``(source path, file in sparknet_ml/build/layers/)``)."""

    name: str
    why: str
    edits: tuple[Edit, ...] = ()
    removes: tuple[str, ...] = ()
    adds: tuple[tuple[str, str], ...] = ()


LAYERS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "layers")
"""sparknet_ml's own Caffe layers, added to the source tree by patches."""


class PatchError(RuntimeError):
    """A patch did not match the source tree it was applied to."""


PATCHES: tuple[Patch, ...] = (
    Patch(
        name="regenerate-protobuf",
        why="The sdist ships caffe.pb.h/.cc and caffe_pb2.py generated by an old protoc that do not "
            "match caffe.proto nor today's protobuf; the recipe regenerates all three from caffe.proto.",
        removes=("include/caffe/proto/caffe.pb.h", "src/caffe/proto/caffe.pb.cc",
                 "python/caffe/proto/caffe_pb2.py"),
    ),
    Patch(
        name="no-gtest-in-net",
        why="net.cpp includes the gtest test main header without using it; dropping the include "
            "removes the build dependency on gtest.",
        edits=(Edit("src/caffe/net.cpp", '#include "caffe/test/test_caffe_main.hpp"\n', ""),),
    ),
    Patch(
        name="cfloat-for-flt-max",
        why="The SSD detection sources use FLT_MAX/FLT_MIN without including <cfloat>; GCC 13's "
            "and CUDA 13's headers no longer pull it in transitively.",
        edits=tuple(Edit(path, "#include <algorithm>\n", "#include <algorithm>\n#include <cfloat>\n")
                    for path in ("src/caffe/util/bbox_util.cpp", "src/caffe/util/bbox_util.cu",
                                 "src/caffe/util/sampler.cpp",
                                 "src/caffe/layers/detection_output_layer.cpp")),
    ),
    Patch(
        name="cpu-fallback-for-gpu-less-layers",
        why="HardSigmoid, HardSwish, MaxUnPool, PixelShuffle, ReLU6 and Upsample declare GPU methods "
            "but have no GPU code, so a CUDA build fails to link. Their GPU methods now run the CPU "
            "code (Caffe syncs the blobs), in CPU and CUDA builds alike.",
        edits=(Edit("include/caffe/util/device_alternate.hpp",
                    "\n#endif  // CAFFE_UTIL_DEVICE_ALTERNATE_H_\n", _CPU_FALLBACK_MACRO),)
        + tuple(Edit(f"src/caffe/layers/{stem}_layer.cpp",
                     f"#ifdef CPU_ONLY\n{indent}STUB_GPU({cls});\n{indent}#endif\n",
                     f"CPU_FALLBACK_GPU({cls});\n")
                for stem, cls, indent in _FALLBACK_LAYERS),
    ),
    Patch(
        name="cuda13-device-prop",
        why="CUDA 13 removed cudaDeviceProp::clockRate, deviceOverlap and kernelExecTimeoutEnabled; "
            "Caffe's DeviceQuery reads them through cudaDeviceGetAttribute instead.",
        edits=(
            Edit("src/caffe/common.cpp",
                 '  LOG(INFO) << "Clock rate:                    " << prop.clockRate;\n',
                 '  int clock_khz = 0, async_engines = 0, exec_timeout = 0;\n'
                 '  cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, device);\n'
                 '  cudaDeviceGetAttribute(&async_engines, cudaDevAttrAsyncEngineCount, device);\n'
                 '  cudaDeviceGetAttribute(&exec_timeout, cudaDevAttrKernelExecTimeout, device);\n'
                 '  LOG(INFO) << "Clock rate:                    " << clock_khz;\n'),
            Edit("src/caffe/common.cpp", '(prop.deviceOverlap ? "Yes" : "No")',
                 '(async_engines > 0 ? "Yes" : "No")'),
            Edit("src/caffe/common.cpp", '(prop.kernelExecTimeoutEnabled ? "Yes" : "No")',
                 '(exec_timeout ? "Yes" : "No")'),
        ),
    ),
    Patch(
        name="proposal-layer-backward-gpu",
        why="proposal_layer.cu does not compile: ProposalLayer declares Backward_gpu but never "
            "defines it. Like its Backward_cpu, it is defined as a no-op (proposals have no "
            "gradient); the GPU forward is kept, and CPU-only builds stub only the forward.",
        edits=(Edit("include/caffe/layers/proposal_layer.hpp",
                    "  virtual void Backward_gpu(const vector<Blob<Dtype>*>& top,\n"
                    "      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);",
                    "  virtual void Backward_gpu(const vector<Blob<Dtype>*>& top,\n"
                    "      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {}"),
               Edit("src/caffe/layers/proposal_layer.cpp", "STUB_GPU(ProposalLayer);",
                    "STUB_GPU_FORWARD(ProposalLayer, Forward);")),
    ),
    Patch(
        name="max-pooling-nan-backward",
        why="Caffe's CPU max pooling leaves a window's argmax at -1 when no value in it compares "
            "greater than -FLT_MAX (NaN inputs, as in diverged training), and its backward then "
            "adds to bottom_diff[-1]: a write before the blob's buffer that corrupts the heap "
            "(a later free aborts the process with 'double free or corruption'). The backward "
            "now skips such windows, as the GPU kernel (which compares indices) already does.",
        edits=(Edit("src/caffe/layers/pooling_layer.cpp",
                    "            bottom_diff[bottom_index] += top_diff[index];\n",
                    "            if (bottom_index >= 0) {  // -1: no argmax (NaN window)\n"
                    "              bottom_diff[bottom_index] += top_diff[index];\n"
                    "            }\n"),),
    ),
    Patch(
        name="pycaffe-solver-state",
        why="SparkNet rounds restart a solver from averaged state: pycaffe gains a settable "
            "Solver.iter (which also places a multistep schedule) and Solver.history (the "
            "momentum / moment blobs of every SGD-family solver), so the learning-rate schedule "
            "follows the global iteration and momentum survives a round.",
        edits=(
            Edit("include/caffe/solver.hpp", "  int iter() { return iter_; }\n",
                 "  int iter() { return iter_; }\n"
                 "  // sparknet_ml patch pycaffe-solver-state: continue another solver's schedule.\n"
                 "  void set_iter(int iter) {\n"
                 "    iter_ = iter;\n"
                 "    current_step_ = 0;\n"
                 "    while (current_step_ < param_.stepvalue_size() &&\n"
                 "           iter_ >= param_.stepvalue(current_step_)) {\n"
                 "      ++current_step_;\n"
                 "    }\n"
                 "  }\n"),
            Edit("python/caffe/_caffe.cpp",
                 "BOOST_PYTHON_MEMBER_FUNCTION_OVERLOADS(SolveOverloads, Solve, 0, 1);\n",
                 "BOOST_PYTHON_MEMBER_FUNCTION_OVERLOADS(SolveOverloads, Solve, 0, 1);\n\n"
                 "// sparknet_ml patch pycaffe-solver-state: every solver type derives from SGDSolver.\n"
                 "template <typename Dtype>\n"
                 "const vector<shared_ptr<Blob<Dtype> > >& Solver_history(Solver<Dtype>* solver) {\n"
                 "  SGDSolver<Dtype>* sgd = dynamic_cast<SGDSolver<Dtype>*>(solver);\n"
                 "  if (!sgd) { throw std::runtime_error(\"this solver keeps no history\"); }\n"
                 "  return sgd->history();\n"
                 "}\n"),
            Edit("python/caffe/_caffe.cpp",
                 '    .add_property("iter", &Solver<Dtype>::iter)\n',
                 '    .add_property("iter", &Solver<Dtype>::iter, &Solver<Dtype>::set_iter)\n'
                 '    .add_property("history", bp::make_function(&Solver_history<Dtype>,\n'
                 '          bp::return_internal_reference<>()))\n'),
        ),
    ),
    Patch(
        name="pycaffe-lazy-optional-imports",
        why="caffe.io imports scikit-image and SciPy at import time (and uses skimage's resize "
            "without importing it); they are needed only to load or resize image files, so they "
            "are imported where used.",
        edits=(
            Edit("python/caffe/io.py", "import skimage.io\nfrom scipy.ndimage import zoom\n", ""),
            Edit("python/caffe/io.py",
                 "    img = skimage.img_as_float(skimage.io.imread(filename, as_grey=not color))",
                 "    import skimage.io\n"
                 "    img = skimage.img_as_float(skimage.io.imread(filename, as_gray=not color))"),
            Edit("python/caffe/io.py",
                 "    if im.shape[-1] == 1 or im.shape[-1] == 3:\n        im_min, im_max",
                 "    from scipy.ndimage import zoom\n    from skimage.transform import resize\n"
                 "    if im.shape[-1] == 1 or im.shape[-1] == 3:\n        im_min, im_max"),
        ),
    ),
    Patch(
        name="tf32-switch",
        why="TensorFloat-32 is opt-in: Caffe::set_tf32 / pycaffe caffe.set_tf32(True) switch "
            "cuBLAS to its TF32 tensor-op math and cuDNN convolutions to their default math, "
            "per thread like Caffe's mode; off, cuBLAS keeps IEEE fp32 and cuDNN is held to "
            "CUDNN_FMA_MATH.",
        edits=(
            Edit("include/caffe/common.hpp",
                 "  inline static void set_mode(Brew mode) { Get().mode_ = mode; }\n",
                 _TF32_SWITCH),
            Edit("include/caffe/common.hpp", "  Brew mode_;\n", "  Brew mode_;\n  bool tf32_ = false;\n"),
            Edit("src/caffe/common.cpp", "  CUBLAS_CHECK(cublasCreate(&Get().cublas_handle_));\n",
                 "  CUBLAS_CHECK(cublasCreate(&Get().cublas_handle_));\n"
                 "  set_tf32(Get().tf32_);  // sparknet_ml patch tf32-switch: the new handle\n"),
            Edit("python/caffe/_caffe.cpp", '  bp::def("set_mode_gpu", &set_mode_gpu);\n',
                 '  bp::def("set_mode_gpu", &set_mode_gpu);\n'
                 '  bp::def("set_tf32", &Caffe::set_tf32);  // sparknet_ml patch tf32-switch\n'
                 '  bp::def("tf32", &Caffe::tf32);\n'),
            Edit("python/caffe/__init__.py", "layer_type_list, set_random_seed\n",
                 "layer_type_list, set_random_seed\nfrom ._caffe import set_tf32, tf32\n"),
        ),
    ),
    Patch(
        name="no-thrust-in-cudnn-cpp",
        why="cudnn_bn_layer.cpp and cudnn_softmax_layer.cpp include thrust without using it; "
            "CUDA 13's thrust needs C++17, and Caffe's .cpp files are C++14.",
        edits=tuple(Edit(f"src/caffe/layers/cudnn_{stem}_layer.cpp",
                         '#include "thrust/device_vector.h"\n', "")
                    for stem in ("bn", "softmax")),
    ),
    Patch(
        name="cudnn9",
        why="Caffe's cuDNN layers target cuDNN <= 7; cuDNN 8 removed the cudnnGet*Algorithm "
            "calls its convolution used. cudnn::fastestWithin picks the fastest of what "
            "cudnnFind* measured within a workspace limit (the convolution that uses it is "
            "cudnn-conv-one-call's); Caffe's other cuDNN calls still exist in cuDNN 9.",
        edits=(Edit("include/caffe/util/cudnn.hpp", "\n}  // namespace cudnn\n", _FASTEST_WITHIN),),
    ),
    Patch(
        name="cudnn-conv-one-call",
        why="BVLC's cuDNN convolution made one cuDNN call per group, each group on three "
            "streams with handles and workspaces of its own, joined by an empty kernel. The "
            "layer is replaced: one call per pass for all groups (cudnnSetConvolutionGroupCount), "
            "on the thread's one cuDNN handle and the default stream, one workspace per thread "
            "and device shared by every convolution, algorithms timed with cudnnFind* once per "
            "input shape and math mode and the fastest within 1 GiB of workspace kept; the "
            "bias gradient as two cuBLAS gemv calls (cudnnConvolutionBackwardBias was 18% of "
            "a TF32 CaffeNet iteration).",
        removes=("include/caffe/layers/cudnn_conv_layer.hpp",
                 "src/caffe/layers/cudnn_conv_layer.cpp", "src/caffe/layers/cudnn_conv_layer.cu"),
        adds=(("include/caffe/layers/cudnn_conv_layer.hpp", "cudnn_conv_layer.hpp"),
              ("src/caffe/layers/cudnn_conv_layer.cpp", "cudnn_conv_layer.cpp"),
              ("src/caffe/layers/cudnn_conv_layer.cu", "cudnn_conv_layer.cu")),
    ),
    Patch(
        name="fused-solver-update",
        why="SGDSolver::ApplyUpdate launched three kernels per learnable blob (weight decay, "
            "the solver's update, Blob::Update): 384 launches a GoogLeNet iteration. On a GPU "
            "every blob's normalisation, decay, update (all six SGD-family solvers, lr_mult and "
            "decay_mult honoured) and data -= diff now run in one launch, each element's "
            "arithmetic as Caffe's kernels write it; caffe.set_fused_update(False) keeps "
            "Caffe's launches.",
        edits=(
            Edit("include/caffe/common.hpp", "  inline static bool tf32() { return Get().tf32_; }\n",
                 "  inline static bool tf32() { return Get().tf32_; }\n"
                 "  // sparknet_ml patch fused-solver-update: the SGD-family solvers' GPU update in\n"
                 "  // one launch for all blobs (on by default, per thread)\n"
                 "  inline static void set_fused_update(bool on) { Get().fused_update_ = on; }\n"
                 "  inline static bool fused_update() { return Get().fused_update_; }\n"),
            Edit("include/caffe/common.hpp", "  bool tf32_ = false;\n",
                 "  bool tf32_ = false;\n  bool fused_update_ = true;\n"),
            Edit("include/caffe/sgd_solvers.hpp", '#include "caffe/solver.hpp"\n',
                 '#include "caffe/fused_update.hpp"  // sparknet_ml patch fused-solver-update\n'
                 '#include "caffe/solver.hpp"\n'),
            Edit("include/caffe/sgd_solvers.hpp",
                 "  vector<shared_ptr<Blob<Dtype> > > history_, update_, temp_;\n\n"
                 "  DISABLE_COPY_AND_ASSIGN(SGDSolver);\n",
                 "  vector<shared_ptr<Blob<Dtype> > > history_, update_, temp_;\n"
                 "#ifndef CPU_ONLY\n  FusedUpdate<Dtype> fused_;  // sparknet_ml patch fused-solver-update\n"
                 "#endif\n\n  DISABLE_COPY_AND_ASSIGN(SGDSolver);\n"),
            Edit("src/caffe/solvers/sgd_solver.cpp",
                 "  ClipGradients();\n  for (int param_id = 0;",
                 "  ClipGradients();\n"
                 "#ifndef CPU_ONLY\n"
                 "  // sparknet_ml patch fused-solver-update: every blob in one launch\n"
                 "  if (Caffe::mode() == Caffe::GPU && Caffe::fused_update() &&\n"
                 "      fused_.Apply(this->type(), this->param_, this->net_->learnable_params(),\n"
                 "                   this->net_->params_lr(), this->net_->params_weight_decay(),\n"
                 "                   history_, rate, this->iter_)) {\n"
                 "    return;\n  }\n"
                 "#endif\n"
                 "  for (int param_id = 0;"),
            Edit("python/caffe/_caffe.cpp", '  bp::def("tf32", &Caffe::tf32);\n',
                 '  bp::def("tf32", &Caffe::tf32);\n'
                 '  // sparknet_ml patch fused-solver-update\n'
                 '  bp::def("set_fused_update", &Caffe::set_fused_update);\n'
                 '  bp::def("fused_update", &Caffe::fused_update);\n'),
            Edit("python/caffe/__init__.py", "from ._caffe import set_tf32, tf32\n",
                 "from ._caffe import set_tf32, tf32\n"
                 "from ._caffe import set_fused_update, fused_update\n"),
        ),
        adds=(("include/caffe/fused_update.hpp", "fused_update.hpp"),
              ("src/caffe/solvers/fused_update.cu", "fused_update.cu")),
    ),
    Patch(
        name="cuda-graph-step",
        why="A small net's iteration is bound by kernel launches and by the host reading its "
            "loss back. Solver::Step(n) now replays the iterations after its first as a CUDA "
            "graph of one iteration (gradients cleared, forward, backward, fused update) "
            "where every layer and the solver allow it, the rate written into the graph's "
            "device buffer before each replay and the losses read once per n; elsewhere the "
            "plain iterations run and the reason is logged once. The build uses the "
            "per-thread default stream (capturable) for Caffe's kernels, cuBLAS, cuRAND and "
            "cuDNN; while capturing, loss layers keep their loss on the device, copies "
            "and memsets are enqueued and BatchReindex leaves its host-side index check to "
            "the plain iterations; the bias multipliers (ones) are refilled only when "
            "their size changes. caffe.set_cuda_graph(False) keeps the plain iterations.",
        edits=(
            Edit("include/caffe/common.hpp",
                 "  inline static bool fused_update() { return Get().fused_update_; }\n",
                 "  inline static bool fused_update() { return Get().fused_update_; }\n"
                 "  // sparknet_ml patch cuda-graph-step: Solver::Step replays a CUDA graph where it\n"
                 "  // can (on by default, per thread); while one is captured, graph_loss() is the\n"
                 "  // device scalar the loss layers add their loss to\n"
                 "  inline static void set_cuda_graph(bool on) { Get().cuda_graph_ = on; }\n"
                 "  inline static bool cuda_graph() { return Get().cuda_graph_; }\n"
                 "  inline static void set_graph_loss(void* loss) { Get().graph_loss_ = loss; }\n"
                 "  inline static void* graph_loss() { return Get().graph_loss_; }\n"),
            Edit("include/caffe/common.hpp", "  bool fused_update_ = true;\n",
                 "  bool fused_update_ = true;\n  bool cuda_graph_ = true;\n"
                 "  void* graph_loss_ = NULL;\n"),
            Edit("src/caffe/common.cpp",
                 "    LOG(ERROR) << \"Cannot create Curand generator. Curand won't be available.\";\n"
                 "  }\n",
                 "    LOG(ERROR) << \"Cannot create Curand generator. Curand won't be available.\";\n"
                 "  }\n"
                 "  // sparknet_ml patch cuda-graph-step: the thread's default stream\n"
                 "  if (cublas_handle_) { cublasSetStream(cublas_handle_, cudaStreamPerThread); }\n"
                 "  if (curand_generator_) {\n"
                 "    curandSetStream(curand_generator_, cudaStreamPerThread);\n  }\n"),
            Edit("src/caffe/common.cpp",
                 "  set_tf32(Get().tf32_);  // sparknet_ml patch tf32-switch: the new handle\n",
                 "  set_tf32(Get().tf32_);  // sparknet_ml patch tf32-switch: the new handle\n"
                 "  // sparknet_ml patch cuda-graph-step: the thread's default stream\n"
                 "  CUBLAS_CHECK(cublasSetStream(Get().cublas_handle_, cudaStreamPerThread));\n"),
            Edit("src/caffe/common.cpp",
                 "  CURAND_CHECK(curandSetPseudoRandomGeneratorSeed(Get().curand_generator_,\n"
                 "      cluster_seedgen()));\n}\n",
                 "  CURAND_CHECK(curandSetPseudoRandomGeneratorSeed(Get().curand_generator_,\n"
                 "      cluster_seedgen()));\n"
                 "  CURAND_CHECK(curandSetStream(Get().curand_generator_, cudaStreamPerThread));\n"
                 "}\n"),
            Edit("include/caffe/layer.hpp",
                 "      Dtype blob_loss = 0;\n      caffe_gpu_dot(count, data, loss_weights, &blob_loss);\n",
                 "      // sparknet_ml patch cuda-graph-step: a captured iteration sums the net's loss\n"
                 "      // on the device itself\n"
                 "      if (Caffe::graph_loss()) { continue; }\n"
                 "      Dtype blob_loss = 0;\n      caffe_gpu_dot(count, data, loss_weights, &blob_loss);\n"),
            Edit("src/caffe/layers/softmax_loss_layer.cu",
                 '#include "caffe/layers/softmax_loss_layer.hpp"\n',
                 '#include "caffe/layers/softmax_loss_layer.hpp"\n'
                 '#include "caffe/graph_step.hpp"  // sparknet_ml patch cuda-graph-step\n'),
            Edit("src/caffe/layers/softmax_loss_layer.cu",
                 "  Dtype loss;\n  caffe_gpu_asum(nthreads, loss_data, &loss);\n",
                 "  if (Caffe::graph_loss()) {  // sparknet_ml patch cuda-graph-step: on the device\n"
                 "    caffe_gpu_sum_divided(nthreads, loss_data, LossLayer<Dtype>::GetNormalizer(\n"
                 "        normalization_, outer_num_, inner_num_, -1), top[0]->mutable_gpu_data());\n"
                 "    if (top.size() == 2) { top[1]->ShareData(prob_); }\n"
                 "    return;\n  }\n"
                 "  Dtype loss;\n  caffe_gpu_asum(nthreads, loss_data, &loss);\n"),
            Edit("src/caffe/util/math_functions.cu",
                 "    CUDA_CHECK(cudaMemcpy(Y, X, N, cudaMemcpyDefault));  // NOLINT(caffe/alt_fn)\n",
                 "    if (Caffe::graph_loss()) {  // sparknet_ml patch cuda-graph-step: captured\n"
                 "      CUDA_CHECK(cudaMemcpyAsync(Y, X, N, cudaMemcpyDefault, cudaStreamPerThread));\n"
                 "      return;\n    }\n"
                 "    CUDA_CHECK(cudaMemcpy(Y, X, N, cudaMemcpyDefault));  // NOLINT(caffe/alt_fn)\n"),
            Edit("src/caffe/util/math_functions.cu",
                 "    CUDA_CHECK(cudaMemset(Y, 0, sizeof(Dtype) * N));  // NOLINT(caffe/alt_fn)\n",
                 "    if (Caffe::graph_loss()) {  // sparknet_ml patch cuda-graph-step: captured\n"
                 "      CUDA_CHECK(cudaMemsetAsync(Y, 0, sizeof(Dtype) * N, cudaStreamPerThread));\n"
                 "      return;\n    }\n"
                 "    CUDA_CHECK(cudaMemset(Y, 0, sizeof(Dtype) * N));  // NOLINT(caffe/alt_fn)\n"),
            Edit("src/caffe/util/math_functions.cpp",
                 "      CUDA_CHECK(cudaMemcpy(Y, X, sizeof(Dtype) * N, cudaMemcpyDefault));\n",
                 "      if (Caffe::graph_loss()) {  // sparknet_ml patch cuda-graph-step: captured\n"
                 "        CUDA_CHECK(cudaMemcpyAsync(Y, X, sizeof(Dtype) * N, cudaMemcpyDefault,\n"
                 "                                   cudaStreamPerThread));\n"
                 "        return;\n      }\n"
                 "      CUDA_CHECK(cudaMemcpy(Y, X, sizeof(Dtype) * N, cudaMemcpyDefault));\n"),
            Edit("src/caffe/layers/inner_product_layer.cpp",
                 "    bias_multiplier_.Reshape(bias_shape);\n"
                 "    caffe_set(M_, Dtype(1), bias_multiplier_.mutable_cpu_data());\n",
                 "    if (bias_multiplier_.shape() != bias_shape) {  // sparknet_ml cuda-graph-step\n"
                 "      bias_multiplier_.Reshape(bias_shape);\n"
                 "      caffe_set(M_, Dtype(1), bias_multiplier_.mutable_cpu_data());\n    }\n"),
            Edit("src/caffe/layers/base_conv_layer.cpp",
                 "    bias_multiplier_.Reshape(bias_multiplier_shape);\n"
                 "    caffe_set(bias_multiplier_.count(), Dtype(1),\n"
                 "        bias_multiplier_.mutable_cpu_data());\n",
                 "    if (bias_multiplier_.shape() != bias_multiplier_shape) {  // cuda-graph-step\n"
                 "      bias_multiplier_.Reshape(bias_multiplier_shape);\n"
                 "      caffe_set(bias_multiplier_.count(), Dtype(1),\n"
                 "          bias_multiplier_.mutable_cpu_data());\n    }\n"),
            Edit("src/caffe/layers/batch_reindex_layer.cu",
                 "  check_batch_reindex(bottom[0]->shape(0), bottom[1]->count(),\n"
                 "                      bottom[1]->cpu_data());\n",
                 "  if (!Caffe::graph_loss()) {  // sparknet_ml cuda-graph-step: no host read captured\n"
                 "    check_batch_reindex(bottom[0]->shape(0), bottom[1]->count(),\n"
                 "                        bottom[1]->cpu_data());\n  }\n"),
            Edit("include/caffe/solver.hpp",
                 "  void UpdateSmoothedLoss(Dtype loss, int start_iter, int average_loss);\n",
                 "  void UpdateSmoothedLoss(Dtype loss, int start_iter, int average_loss);\n"
                 "  // sparknet_ml patch cuda-graph-step: runs the rest of Step's iterations (true)\n"
                 "  virtual bool ReplayGraph(int start_iter, int stop_iter, int average_loss) {\n"
                 "    return false;\n  }\n"),
            Edit("src/caffe/solver.cpp",
                 "  while (iter_ < stop_iter) {\n    // zero-init the params\n",
                 "  while (iter_ < stop_iter) {\n"
                 "    // sparknet_ml patch cuda-graph-step: the rest as replays of a CUDA graph\n"
                 "    if (ReplayGraph(start_iter, stop_iter, average_loss)) { break; }\n"
                 "    // zero-init the params\n"),
            Edit("include/caffe/sgd_solvers.hpp",
                 '#include "caffe/fused_update.hpp"  // sparknet_ml patch fused-solver-update\n',
                 '#include "caffe/fused_update.hpp"  // sparknet_ml patch fused-solver-update\n'
                 '#include "caffe/graph_step.hpp"  // sparknet_ml patch cuda-graph-step\n'),
            Edit("include/caffe/sgd_solvers.hpp",
                 "  FusedUpdate<Dtype> fused_;  // sparknet_ml patch fused-solver-update\n",
                 "  FusedUpdate<Dtype> fused_;  // sparknet_ml patch fused-solver-update\n"
                 "  // sparknet_ml patch cuda-graph-step\n"
                 "  GraphStep<Dtype> graph_;\n"
                 "  virtual bool ReplayGraph(int start_iter, int stop_iter, int average_loss);\n"
                 "  std::string GraphRefusal();  // why the iterations are not captured, or \"\"\n"
                 " public:\n"
                 "  long graph_replays() const { return graph_.replays; }\n"
                 "  std::string graph_refusal() const { return graph_.refusal; }\n"
                 " protected:\n"),
            Edit("python/caffe/_caffe.cpp", "  return sgd->history();\n}\n",
                 "  return sgd->history();\n}\n\n"
                 "// sparknet_ml patch cuda-graph-step: iterations replayed, and why none are\n"
                 "template <typename Dtype>\n"
                 "long Solver_graph_replays(Solver<Dtype>* solver) {\n"
                 "#ifndef CPU_ONLY\n"
                 "  SGDSolver<Dtype>* sgd = dynamic_cast<SGDSolver<Dtype>*>(solver);\n"
                 "  if (sgd) { return sgd->graph_replays(); }\n"
                 "#endif\n"
                 "  return 0;\n}\n\n"
                 "template <typename Dtype>\n"
                 "std::string Solver_graph_refusal(Solver<Dtype>* solver) {\n"
                 "#ifndef CPU_ONLY\n"
                 "  SGDSolver<Dtype>* sgd = dynamic_cast<SGDSolver<Dtype>*>(solver);\n"
                 "  if (sgd) { return sgd->graph_refusal(); }\n"
                 "#endif\n"
                 "  return \"no CUDA\";\n}\n"),
            Edit("python/caffe/_caffe.cpp",
                 '    .add_property("history", bp::make_function(&Solver_history<Dtype>,\n'
                 '          bp::return_internal_reference<>()))\n',
                 '    .add_property("history", bp::make_function(&Solver_history<Dtype>,\n'
                 '          bp::return_internal_reference<>()))\n'
                 '    .add_property("cuda_graph_replays", &Solver_graph_replays<Dtype>)\n'
                 '    .add_property("cuda_graph_refusal", &Solver_graph_refusal<Dtype>)\n'),
            Edit("python/caffe/_caffe.cpp", '  bp::def("fused_update", &Caffe::fused_update);\n',
                 '  bp::def("fused_update", &Caffe::fused_update);\n'
                 '  // sparknet_ml patch cuda-graph-step\n'
                 '  bp::def("set_cuda_graph", &Caffe::set_cuda_graph);\n'
                 '  bp::def("cuda_graph", &Caffe::cuda_graph);\n'),
            Edit("python/caffe/__init__.py", "from ._caffe import set_fused_update, fused_update\n",
                 "from ._caffe import set_fused_update, fused_update\n"
                 "from ._caffe import set_cuda_graph, cuda_graph\n"),
        ) + tuple(Edit(f"src/caffe/layers/cudnn_{stem}_layer.cpp",
                       "  CUDNN_CHECK(cudnnCreate(&handle_));\n",
                       "  CUDNN_CHECK(cudnnCreate(&handle_));\n"
                       "  CUDNN_CHECK(cudnnSetStream(handle_, cudaStreamPerThread));  // cuda-graph-step\n")
                  for stem in ("bn", "lcn", "lrn", "pooling", "relu", "sigmoid", "softmax", "tanh")),
        adds=(("include/caffe/graph_step.hpp", "graph_step.hpp"),
              ("src/caffe/solvers/graph_step.cpp", "graph_step.cpp"),
              ("src/caffe/solvers/graph_step.cu", "graph_step.cu")),
    ),
    Patch(
        name="cudnn-pooling-caffe-shapes",
        why="Caffe rounds pooled sizes up, cuDNN down (cifar10_quick's 16x16 -> 8x8 average "
            "pooling is 7x7 for cuDNN), and the extra border windows then average differently. "
            "The cuDNN pooling layer now runs Caffe's own kernels for such shapes, and only "
            "average pooling goes to cuDNN (stochastic pooling made it abort).",
        edits=(
            Edit("include/caffe/layers/cudnn_pooling_layer.hpp",
                 "  cudnnPoolingMode_t        mode_;\n",
                 "  cudnnPoolingMode_t        mode_;\n"
                 "  bool caffe_shape_ = false;  // sparknet_ml patch: cuDNN's shape differs\n"),
            Edit("src/caffe/layers/cudnn_pooling_layer.cpp",
                 "      this->channels_, this->pooled_height_, this->pooled_width_);\n}\n",
                 "      this->channels_, this->pooled_height_, this->pooled_width_);\n"
                 "  // sparknet_ml patch cudnn-pooling-caffe-shapes\n"
                 "  int n, c, h, w;\n"
                 "  CUDNN_CHECK(cudnnGetPooling2dForwardOutputDim(pooling_desc_, bottom_desc_,\n"
                 "      &n, &c, &h, &w));\n"
                 "  caffe_shape_ = h != this->pooled_height_ || w != this->pooled_width_;\n}\n"),
            Edit("src/caffe/layers/cudnn_pooling_layer.cu",
                 "    const vector<Blob<Dtype>*>& top) {\n"
                 "  const Dtype* bottom_data = bottom[0]->gpu_data();\n",
                 "    const vector<Blob<Dtype>*>& top) {\n"
                 "  if (caffe_shape_) {  // sparknet_ml patch cudnn-pooling-caffe-shapes\n"
                 "    PoolingLayer<Dtype>::Forward_gpu(bottom, top);\n    return;\n  }\n"
                 "  const Dtype* bottom_data = bottom[0]->gpu_data();\n"),
            Edit("src/caffe/layers/cudnn_pooling_layer.cu",
                 "  if (!propagate_down[0]) {\n    return;\n  }\n",
                 "  if (!propagate_down[0]) {\n    return;\n  }\n"
                 "  if (caffe_shape_) {  // sparknet_ml patch cudnn-pooling-caffe-shapes\n"
                 "    PoolingLayer<Dtype>::Backward_gpu(top, propagate_down, bottom);\n"
                 "    return;\n  }\n"),
            Edit("src/caffe/layer_factory.cpp",
                 "    if (param.pooling_param().pool() == PoolingParameter_PoolMethod_MAX) {",
                 "    if (param.pooling_param().pool() != PoolingParameter_PoolMethod_AVE) {"),
        ),
    ),
    Patch(
        name="cudnn-engines-in-gpu-mode",
        why="A cuDNN build made every net's Convolution, Pooling, LRN, ReLU, Sigmoid, Softmax "
            "and TanH default to cuDNN, whose layers create CUDA streams and cuDNN handles at "
            "set-up: a CPU-mode net (useGpu=auto on a node without a GPU) would abort. The "
            "default engine is cuDNN only when the net is built in GPU mode.",
        edits=(
            Edit("src/caffe/layer_factory.cpp",
                 "    if (!use_dilation) {\n      engine = ConvolutionParameter_Engine_CUDNN;",
                 "    if (!use_dilation && Caffe::mode() == Caffe::GPU) {\n"
                 "      engine = ConvolutionParameter_Engine_CUDNN;"),
            Edit("src/caffe/layer_factory.cpp",
                 "#ifdef USE_CUDNN\n    engine = LRNParameter_Engine_CUDNN;\n#else",
                 "#ifdef USE_CUDNN\n    engine = Caffe::mode() == Caffe::GPU ?\n"
                 "        LRNParameter_Engine_CUDNN : LRNParameter_Engine_CAFFE;\n#else"),
        ) + tuple(Edit("src/caffe/layer_factory.cpp",
                       f"#ifdef USE_CUDNN\n    engine = {layer}Parameter_Engine_CUDNN;\n#endif",
                       f"#ifdef USE_CUDNN\n    if (Caffe::mode() == Caffe::GPU) {{\n"
                       f"      engine = {layer}Parameter_Engine_CUDNN;\n    }}\n#endif")
                  for layer in _CUDNN_DEFAULT_ENGINES),
    ),
    Patch(
        name="sparknet-transform-layer",
        why="Caffe's DataTransformer (random crop, mirror, mean, scale) runs on the host, batch "
            "by batch. The layer SparkNetTransform does it inside the net, on the device, from a "
            "block of stored examples and per-example draws (row, offsets, flip) that "
            "sparknet_ml computes from (seed, partition, round): a GPU fit with crops and "
            "mirrors keeps its block on the device like any other, as uint8 pixels "
            "(TransformationParameter.packed_uint8), and GPU scoring uploads uint8 batches.",
        edits=(Edit("src/caffe/proto/caffe.proto",
                    "  optional EmitConstraint emit_constraint = 10;\n}",
                    "  optional EmitConstraint emit_constraint = 10;\n"
                    "  // sparknet_ml patch sparknet-transform-layer: the SparkNetTransform layer's\n"
                    "  // block holds uint8 pixels, four to a float, each image row padded to\n"
                    "  // whole floats (a quarter of the memory and of the host-to-device copy).\n"
                    "  optional bool packed_uint8 = 101 [default = false];\n}"),),
        adds=(("include/caffe/layers/sparknet_transform_layer.hpp",
               "sparknet_transform_layer.hpp"),
              ("src/caffe/layers/sparknet_transform_layer.cpp", "sparknet_transform_layer.cpp"),
              ("src/caffe/layers/sparknet_transform_layer.cu", "sparknet_transform_layer.cu")),
    ),
    Patch(
        name="sparknet-rows-layer",
        why="A resident training net took each iteration's rows from a MemoryData layer, "
            "which points its top at host memory batch by batch: a CUDA graph cannot follow "
            "that, so a SparkNet round never replayed one. The layer SparkNetRows hands out "
            "the batches of a round's rows from a blob written once per round, its cursor in "
            "device memory advanced by the kernel that copies the batch (on the CPU, the same "
            "copy), so the round's tau iterations can be tau replays.",
        adds=(("include/caffe/layers/sparknet_rows_layer.hpp", "sparknet_rows_layer.hpp"),
              ("src/caffe/layers/sparknet_rows_layer.cpp", "sparknet_rows_layer.cpp"),
              ("src/caffe/layers/sparknet_rows_layer.cu", "sparknet_rows_layer.cu")),
    ),
    Patch(
        name="pycaffe-flat-state",
        why="A SparkNet round moves a solver's whole state (weights and history) between host "
            "and device; blob by blob from pageable memory that was 0.19 s for CaffeNet's "
            "465 MiB on an H100, against 19 ms for one pinned copy each way. caffe.FlatState "
            "puts every learnable blob and the history in one contiguous device buffer "
            "(parallel.cpp's apply_buffers) mirrored by one pinned host buffer that numpy "
            "reads and writes in place.",
        edits=(Edit("python/caffe/_caffe.cpp", '#include "caffe/sgd_solvers.hpp"\n',
                    '#include "caffe/sgd_solvers.hpp"\n'
                    '#include "caffe/flat_state.hpp"  // sparknet_ml patch pycaffe-flat-state\n'),
               Edit("python/caffe/_caffe.cpp", "BOOST_PYTHON_MODULE(_caffe) {\n",
                    "#ifndef CPU_ONLY\n"
                    "// sparknet_ml patch pycaffe-flat-state: the pinned host buffer as a numpy\n"
                    "// vector that keeps its FlatState alive.\n"
                    "bp::object FlatState_host(bp::object self) {\n"
                    "  FlatState<float>& state = bp::extract<FlatState<float>&>(self);\n"
                    "  npy_intp dims[1] = {static_cast<npy_intp>(state.size())};\n"
                    "  PyObject* array = PyArray_SimpleNewFromData(1, dims, NPY_FLOAT32,\n"
                    "                                              state.host());\n"
                    "  Py_INCREF(self.ptr());\n"
                    "  PyArray_SetBaseObject(reinterpret_cast<PyArrayObject*>(array), self.ptr());\n"
                    "  return bp::object(bp::handle<>(array));\n"
                    "}\n"
                    "#endif\n\n"
                    "BOOST_PYTHON_MODULE(_caffe) {\n"),
               Edit("python/caffe/_caffe.cpp",
                    "  bp::def(\"get_solver\", &GetSolverFromFile,\n"
                    "      bp::return_value_policy<bp::manage_new_object>());\n",
                    "  bp::def(\"get_solver\", &GetSolverFromFile,\n"
                    "      bp::return_value_policy<bp::manage_new_object>());\n"
                    "#ifndef CPU_ONLY\n"
                    "  // sparknet_ml patch pycaffe-flat-state\n"
                    "  bp::class_<FlatState<float>, boost::noncopyable>(\n"
                    "      \"FlatState\", bp::init<Solver<float>*>())\n"
                    "    .add_property(\"size\", &FlatState<float>::size)\n"
                    "    .def(\"host\", &FlatState_host)\n"
                    "    .def(\"to_host\", &FlatState<float>::to_host)\n"
                    "    .def(\"from_host\", &FlatState<float>::from_host);\n"
                    "#endif\n")),
        adds=(("include/caffe/flat_state.hpp", "flat_state.hpp"),),
    ),
    Patch(
        name="pycaffe-smoothed-loss",
        why="A resident round runs its tau iterations as one Solver.step(tau), not tau calls "
            "from Python that each read the loss back; the round's mean loss is Caffe's own "
            "smoothed loss (the mean of the step's losses while average_loss >= tau).",
        edits=(Edit("include/caffe/solver.hpp", "  int iter() { return iter_; }\n",
                    "  int iter() { return iter_; }\n"
                    "  // sparknet_ml patch pycaffe-smoothed-loss\n"
                    "  Dtype smoothed_loss() const { return smoothed_loss_; }\n"),
               Edit("python/caffe/_caffe.cpp",
                    '    .add_property("iter", &Solver<Dtype>::iter, &Solver<Dtype>::set_iter)\n',
                    '    .add_property("iter", &Solver<Dtype>::iter, &Solver<Dtype>::set_iter)\n'
                    '    .add_property("smoothed_loss", &Solver<Dtype>::smoothed_loss)\n')),
    ),
    Patch(
        name="pycaffe-upgrade-proto",
        why="Nets and caffemodels written before 2015 use Caffe's V1 'layers' format (and V0, "
            "legacy data-transform and input fields, 3-param BatchNorm, solver_type enums); Caffe "
            "upgrades them on read with UpgradeNetAsNeeded / UpgradeSolverAsNeeded. pycaffe gains "
            "upgrade_net_param and upgrade_solver_param, serialized message to serialized message "
            "with the names of the upgrades that ran, so sparknet_ml's parser reads what Caffe "
            "reads without a second set of upgrade rules.",
        edits=(Edit("python/caffe/_caffe.cpp", "BOOST_PYTHON_MODULE(_caffe) {\n",
                    _UPGRADE_PROTO + "BOOST_PYTHON_MODULE(_caffe) {\n"),
               Edit("python/caffe/_caffe.cpp",
                    '  bp::def("layer_type_list", &LayerRegistry<Dtype>::LayerTypeList);\n',
                    '  bp::def("layer_type_list", &LayerRegistry<Dtype>::LayerTypeList);\n'
                    '  // sparknet_ml patch pycaffe-upgrade-proto\n'
                    '  bp::def("upgrade_net_param", &UpgradeNetParam);\n'
                    '  bp::def("upgrade_solver_param", &UpgradeSolverParam);\n')),
    ),
)


def apply_patches(source_dir: str) -> list[str]:
    """Apply every patch to an extracted Caffe source tree, in place.

    Parameters
    ----------
    source_dir : str
        Root of the pristine extracted sdist.

    Returns
    -------
    list of str
        Names of the patches applied, in order.

    Raises
    ------
    PatchError
        When an edit's text does not occur exactly once, a file to remove is missing or a
        file to add exists.
    """
    applied = []
    for patch in PATCHES:
        for edit in patch.edits:
            path = os.path.join(source_dir, edit.path)
            with open(path, encoding="utf-8") as f:
                text = f.read()
            count = text.count(edit.old)
            if count != 1:
                raise PatchError(f"patch {patch.name!r}: expected one match in {edit.path}, "
                                 f"found {count}: {edit.old[:60]!r}")
            with open(path, "w", encoding="utf-8") as f:
                f.write(text.replace(edit.old, edit.new))
        for rel in patch.removes:
            path = os.path.join(source_dir, rel)
            if not os.path.exists(path):
                raise PatchError(f"patch {patch.name!r}: {rel} is not in the source tree")
            os.remove(path)
        for rel, name in patch.adds:
            path = os.path.join(source_dir, rel)
            if os.path.exists(path):
                raise PatchError(f"patch {patch.name!r}: {rel} is already in the source tree")
            with open(os.path.join(LAYERS_DIR, name), encoding="utf-8") as f:
                text = f.read()
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        applied.append(patch.name)
    return applied
