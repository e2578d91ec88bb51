#include <vector>

#include "caffe/layers/sparknet_transform_layer.hpp"

namespace caffe {

template <typename Dtype>
void SparkNetTransformLayer<Dtype>::LayerSetUp(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const TransformationParameter& param = this->layer_param_.transform_param();
  crop_h_ = param.crop_size() ? param.crop_size() : param.crop_h();
  crop_w_ = param.crop_size() ? param.crop_size() : param.crop_w();
  scale_ = param.scale();
  packed_ = param.packed_uint8();
  CHECK_EQ(bottom[0]->num_axes(), 4) << "SparkNetTransform: the block is N x C x H x W";
  const int channels = bottom[0]->shape(1);
  const int values = param.mean_value_size();
  CHECK(values == 0 || values == 1 || values == channels)
      << "SparkNetTransform: give 1 mean_value or " << channels;
  CHECK(values == 0 || bottom.size() == 2)
      << "SparkNetTransform: a mean image and mean_value both given";
  if (values) {
    mean_values_.Reshape(vector<int>(1, channels));
    Dtype* mean = mean_values_.mutable_cpu_data();
    for (int c = 0; c < channels; ++c) {
      mean[c] = param.mean_value(values == 1 ? 0 : c);
    }
  }
}

template <typename Dtype>
void SparkNetTransformLayer<Dtype>::Reshape(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const Blob<Dtype>& block = *bottom[0];
  const int height = block.shape(2), width = Width(bottom);
  const int out_h = crop_h_ ? crop_h_ : height, out_w = crop_w_ ? crop_w_ : width;
  CHECK_LE(out_h, height) << "SparkNetTransform: crop taller than the examples";
  CHECK_LE(out_w, width) << "SparkNetTransform: crop wider than the examples";
  CHECK_LE(width, RowStride(bottom)) << "SparkNetTransform: mean image wider than the block";
  CHECK_EQ(bottom[1]->count(1), 4) << "SparkNetTransform: draws are B x 4";
  if (bottom.size() == 3) {
    CHECK_EQ(bottom[2]->count(), block.shape(1) * height * width)
        << "SparkNetTransform: mean image size";
  }
  vector<int> shape(4);
  shape[0] = bottom[1]->shape(0);
  shape[1] = block.shape(1);
  shape[2] = out_h;
  shape[3] = out_w;
  top[0]->Reshape(shape);
}

template <typename Dtype>
void SparkNetTransformLayer<Dtype>::CheckDraws(const vector<Blob<Dtype>*>& bottom) const {
  const Blob<Dtype>& block = *bottom[0];
  const Blob<Dtype>& draws = *bottom[1];
  const Dtype* d = draws.cpu_data();
  const int height = block.shape(2), width = Width(bottom);
  const int out_h = crop_h_ ? crop_h_ : height, out_w = crop_w_ ? crop_w_ : width;
  for (int b = 0; b < draws.shape(0); ++b) {
    CHECK(d[4 * b] >= 0 && d[4 * b] < block.shape(0)) << "SparkNetTransform: row " << d[4 * b];
    CHECK(d[4 * b + 1] >= 0 && d[4 * b + 1] <= height - out_h) << "SparkNetTransform: h offset";
    CHECK(d[4 * b + 2] >= 0 && d[4 * b + 2] <= width - out_w) << "SparkNetTransform: w offset";
  }
}

template <typename Dtype>
void SparkNetTransformLayer<Dtype>::Forward_cpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  CheckDraws(bottom);
  const Dtype* block = bottom[0]->cpu_data();
  const unsigned char* pixels = reinterpret_cast<const unsigned char*>(block);
  const Dtype* draws = bottom[1]->cpu_data();
  const Dtype* mean_image = bottom.size() == 3 ? bottom[2]->cpu_data() : NULL;
  const Dtype* mean_values = mean_values_.count() ? mean_values_.cpu_data() : NULL;
  Dtype* out = top[0]->mutable_cpu_data();
  const int channels = top[0]->shape(1), out_h = top[0]->shape(2), out_w = top[0]->shape(3);
  const int height = bottom[0]->shape(2), width = Width(bottom), stride = RowStride(bottom);
  for (int b = 0; b < top[0]->shape(0); ++b) {
    const int row = static_cast<int>(draws[4 * b]);
    const int h_off = static_cast<int>(draws[4 * b + 1]);
    const int w_off = static_cast<int>(draws[4 * b + 2]);
    const bool mirror = draws[4 * b + 3] != 0;
    for (int c = 0; c < channels; ++c) {
      for (int h = 0; h < out_h; ++h) {
        for (int w = 0; w < out_w; ++w) {
          const int col = w_off + (mirror ? out_w - 1 - w : w);
          const long long in = (static_cast<long long>(row) * channels + c) * height * stride
                               + static_cast<long long>(h_off + h) * stride + col;
          Dtype x = packed_ ? static_cast<Dtype>(pixels[in]) : block[in];
          if (mean_image) {
            x -= mean_image[(c * height + h_off + h) * width + col];
          } else if (mean_values) {
            x -= mean_values[c];
          }
          out[((b * channels + c) * out_h + h) * out_w + w] = x * scale_;
        }
      }
    }
  }
}

template <typename Dtype>
void SparkNetTransformLayer<Dtype>::Backward_cpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  for (int i = 0; i < propagate_down.size(); ++i) {
    if (propagate_down[i]) { NOT_IMPLEMENTED; }
  }
}

#ifdef CPU_ONLY
STUB_GPU(SparkNetTransformLayer);
#endif

INSTANTIATE_CLASS(SparkNetTransformLayer);
REGISTER_LAYER_CLASS(SparkNetTransform);

}  // namespace caffe
