#ifndef CAFFE_SPARKNET_ROWS_LAYER_HPP_
#define CAFFE_SPARKNET_ROWS_LAYER_HPP_

#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layer.hpp"
#include "caffe/proto/caffe.pb.h"

namespace caffe {

/**
 * sparknet_ml layer: each iteration's rows of a round, handed out from a blob on the device.
 *
 * Bottom: the round's rows (R x 1 x 1 x W: row indices, or the SparkNetTransform layer's
 * draws), R a multiple of memory_data_param.batch_size B. Top: B x 1 x 1 x W, the rows of
 * the next batch; after the last batch the first comes again, and the cursor starts over
 * when the bottom's shape changes, as MemoryData's does when it is given new arrays.
 * The cursor lives in device memory on a GPU and is advanced by the same kernel that copies
 * the batch, so an iteration captured in a CUDA graph reads the next batch at every replay
 * (MemoryData points its top at host memory, which a graph cannot follow). No gradient.
 */
template <typename Dtype>
class SparkNetRowsLayer : public Layer<Dtype> {
 public:
  explicit SparkNetRowsLayer(const LayerParameter& param) : Layer<Dtype>(param) {}
  virtual void Reshape(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  virtual inline const char* type() const { return "SparkNetRows"; }
  virtual inline int ExactNumBottomBlobs() const { return 1; }
  virtual inline int ExactNumTopBlobs() const { return 1; }

 protected:
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Forward_gpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Backward_cpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);
  virtual void Backward_gpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
    Backward_cpu(top, propagate_down, bottom);
  }

  vector<int> rows_shape_;  // the bottom's shape the cursor counts batches of
  Blob<int> cursor_;        // the next batch
};

}  // namespace caffe

#endif  // CAFFE_SPARKNET_ROWS_LAYER_HPP_
