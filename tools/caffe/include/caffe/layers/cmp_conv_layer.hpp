// cmpstore's CmpConvolution, with the interface of the DeepCompression-caffe
// fork's layer: ConvolutionParameter sparse_ratio = 19, class_num = 20,
// quantize_term = 21.
#ifndef CAFFE_CMP_CONV_LAYER_HPP_
#define CAFFE_CMP_CONV_LAYER_HPP_

#include "caffe/layers/cmp_layer.hpp"
#include "caffe/layers/conv_layer.hpp"

namespace caffe {

template <typename Dtype>
class CmpConvolutionLayer : public CmpLayer<Dtype, ConvolutionLayer<Dtype> > {
 public:
  explicit CmpConvolutionLayer(const LayerParameter& param)
      : CmpLayer<Dtype, ConvolutionLayer<Dtype> >(
            param, param.convolution_param().sparse_ratio(),
            param.convolution_param().quantize_term(),
            param.convolution_param().class_num()) {}
  virtual inline const char* type() const { return "CmpConvolution"; }
};

}  // namespace caffe

#endif  // CAFFE_CMP_CONV_LAYER_HPP_
