#ifndef CAFFE_SPARKNET_TRANSFORM_LAYER_HPP_
#define CAFFE_SPARKNET_TRANSFORM_LAYER_HPP_

#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layer.hpp"
#include "caffe/proto/caffe.pb.h"

namespace caffe {

/**
 * sparknet_ml layer: Caffe's DataTransformer (crop, mirror, mean, scale) on the device, for a
 * training block that lives inside the net.
 *
 * Bottoms: the block (N x C x H x W, the stored examples), the draws (B x 4: row of the block,
 * crop offset h, crop offset w, mirror 0/1, one row per example of the batch) and optionally
 * the mean image (1 x C x H x W). With transform_param.packed_uint8 the block holds uint8
 * pixels, four to a float: N x C x H x ceil(W / 4), each image row padded to whole floats (W
 * is then the mean image's width, or the padded one without a mean image).
 * Top: B x C x crop_h x crop_w, where
 *   top[b][c][h][w] = (block[row][c][h_off + h][w_off + w'] - mean) * scale,
 *   w' = mirror ? crop_w - 1 - w : w, mean = mean image at the same position or mean_value[c],
 * exactly as DataTransformer<Dtype>::Transform(const Datum&, ...) computes it.
 * Crop size, mean_value and scale come from the layer's transform_param. No gradient.
 */
template <typename Dtype>
class SparkNetTransformLayer : public Layer<Dtype> {
 public:
  explicit SparkNetTransformLayer(const LayerParameter& param) : Layer<Dtype>(param) {}
  virtual void LayerSetUp(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Reshape(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  virtual inline const char* type() const { return "SparkNetTransform"; }
  virtual inline int MinBottomBlobs() const { return 2; }
  virtual inline int MaxBottomBlobs() const { return 3; }
  virtual inline int ExactNumTopBlobs() const { return 1; }

 protected:
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Forward_gpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Backward_cpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);
  virtual void Backward_gpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);

  void CheckDraws(const vector<Blob<Dtype>*>& bottom) const;
  // Bytes (packed) or values (float) from one image row of the block to the next.
  int RowStride(const vector<Blob<Dtype>*>& bottom) const {
    return packed_ ? 4 * bottom[0]->shape(3) : bottom[0]->shape(3);
  }
  // The examples' width: the mean image's when the block is packed and there is one.
  int Width(const vector<Blob<Dtype>*>& bottom) const {
    return packed_ && bottom.size() == 3 ? bottom[2]->shape(3) : RowStride(bottom);
  }

  bool packed_;
  int crop_h_, crop_w_;
  Dtype scale_;
  Blob<Dtype> mean_values_;  // one value per channel, or empty
};

}  // namespace caffe

#endif  // CAFFE_SPARKNET_TRANSFORM_LAYER_HPP_
