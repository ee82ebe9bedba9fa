"""A float32 model's weights into a quantized model of the same shape, tensor by tensor."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from odin.quant.formats import QuantError, quantize


def fill_quantized(model: Any, params: Mapping[str, np.ndarray]) -> None:
    """Write float32 tensors `params` (name -> array, every tensor of the model) into `model`:
    its float32 tensors copied, its quantized ones quantized. A tensor at a time, so a caller
    streaming a checkpoint holds one float32 tensor beside the quantized model."""
    for name, (view, tname) in model.named_qtensors().items():
        if name not in params:
            raise QuantError(f"tensor {name} is missing")
        view[...] = quantize(np.asarray(params[name], dtype=np.float32).reshape(view.shape[0], -1), tname)
    for name, view in model.named_params().items():
        if name not in params:
            raise QuantError(f"tensor {name} is missing")
        view[...] = np.asarray(params[name], dtype=np.float32).reshape(view.shape)


def quantized_copy(model: Any, weights: Any) -> Any:
    """A new model of model's architecture and shape with `weights` (odin.model.WeightTypes)."""
    if model.is_quantized:
        raise QuantError(f"the model is already quantized ({model.weights.describe()}): quantize its float32 "
                         f"original instead")
    new = type(model)(model.shape, weights)
    fill_quantized(new, model.named_params())
    return new
