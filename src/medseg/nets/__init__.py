"""Networks: the registry (`build_model` by name) and one module per family; this file only
re-exports (`medseg.nets.registry` holds the rules)."""
from .describe import describe_models, format_models_table, models_table
from .fcn import FCN
from .registry import (ALIASES, FEATURES_2D, FEATURES_3D, MODELS, ModelSpec, axis_divisors, build_model,
                       build_on_meta, count_parameters, model_divisor, model_spec, select_options)
from .resunet import ResUNet
from .unet import UNet
from .vnet import VNet

__all__ = ["ALIASES", "FCN", "FEATURES_2D", "FEATURES_3D", "MODELS", "ModelSpec", "ResUNet", "UNet", "VNet",
           "axis_divisors", "build_model", "build_on_meta", "count_parameters", "describe_models",
           "format_models_table", "model_divisor", "model_spec", "models_table", "select_options"]
