#include <vector>

#include "caffe/layers/sparknet_rows_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

template <typename Dtype>
void SparkNetRowsLayer<Dtype>::Reshape(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const int batch = this->layer_param_.memory_data_param().batch_size();
  CHECK_GT(batch, 0) << "SparkNetRows: memory_data_param.batch_size";
  CHECK_GT(bottom[0]->num_axes(), 0) << "SparkNetRows: the rows are R x ...";
  CHECK_EQ(bottom[0]->shape(0) % batch, 0)
      << "SparkNetRows: " << bottom[0]->shape(0) << " rows are not whole batches of " << batch;
  if (bottom[0]->shape() != rows_shape_) {
    rows_shape_ = bottom[0]->shape();
    cursor_.Reshape(vector<int>(1, 1));
    cursor_.mutable_cpu_data()[0] = 0;
  }
  vector<int> shape = bottom[0]->shape();
  shape[0] = batch;
  top[0]->Reshape(shape);
}

template <typename Dtype>
void SparkNetRowsLayer<Dtype>::Forward_cpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const int count = top[0]->count();
  int* cursor = cursor_.mutable_cpu_data();
  caffe_copy(count, bottom[0]->cpu_data() + *cursor * count, top[0]->mutable_cpu_data());
  *cursor = (*cursor + 1) % (bottom[0]->count() / count);
}

template <typename Dtype>
void SparkNetRowsLayer<Dtype>::Backward_cpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  if (propagate_down[0]) { NOT_IMPLEMENTED; }
}

#ifdef CPU_ONLY
STUB_GPU_FORWARD(SparkNetRowsLayer, Forward);
#endif

INSTANTIATE_CLASS(SparkNetRowsLayer);
REGISTER_LAYER_CLASS(SparkNetRows);

}  // namespace caffe
