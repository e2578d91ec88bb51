"""Caffe nets as protobuf: safe parsing, layer allowlist, train/deploy derivation, the NetParam DSL.

Pure protobuf (``caffe.proto.caffe_pb2``): no Spark, no pycaffe ``Net``; nets and solvers in
Caffe's deprecated formats go through Caffe's own upgrade (pycaffe's ``upgrade_net_param``).
"""
from .derive import (DeployNet, accuracy_top_ks, data_layer_tops, data_transform, deploy_net,
                     filter_phase, ignore_label, infer_input_shape, resizes_images,
                     resolve_transform, train_net)
from .dsl import (AccuracyLayer, ConcatLayer, ConvolutionLayer, DropoutLayer, InnerProductLayer,
                  NetParam, Pooling, PoolingLayer, RDDLayer, ReLULayer, SigmoidLayer, SoftmaxLayer,
                  SoftmaxWithLoss, TanHLayer)
from .layers import ALLOWED_LAYER_TYPES, DATA_LAYER_TYPES, check_bottoms, check_layers
from .prototxt import (NetSpecError, UpgradedFormatWarning, check_solver, net_to_text, parse_net,
                       parse_solver)

__all__ = [
    "NetSpecError", "UpgradedFormatWarning", "parse_net", "parse_solver", "check_solver",
    "net_to_text",
    "ALLOWED_LAYER_TYPES", "DATA_LAYER_TYPES", "check_layers", "check_bottoms",
    "DeployNet", "accuracy_top_ks", "filter_phase", "data_layer_tops", "infer_input_shape",
    "data_transform", "ignore_label", "resizes_images", "resolve_transform", "train_net", "deploy_net",
    "NetParam", "Pooling", "RDDLayer", "ConvolutionLayer", "PoolingLayer", "InnerProductLayer",
    "ReLULayer", "SigmoidLayer", "TanHLayer", "SoftmaxLayer", "DropoutLayer", "ConcatLayer",
    "AccuracyLayer", "SoftmaxWithLoss",
]
