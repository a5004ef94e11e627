"""The loaded model's card."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.deps import APIKeyDep, StateDep
from service.schemas import ERROR_RESPONSES

router = APIRouter(tags=["model"], dependencies=[APIKeyDep], responses=ERROR_RESPONSES)


@router.get(
    "/model",
    summary="The model card of the loaded model",
    description="The JSON model card exactly as exported (models/README.md), plus a `serving` object saying "
    "where this process runs it (device, onnxruntime providers, FAISS index device, and on a CPU the int8 "
    "dot-product instruction set it has; null where it has none (int8 may then run no faster than fp32), where "
    "/proc/cpuinfo cannot be read, or on a GPU session).",
)
async def get_model(state: StateDep) -> dict[str, Any]:
    return {
        **state.embedder.card.to_json_dict(),
        "serving": {
            "device": state.embedder.device,
            "precision": state.embedder.card.precision,
            "providers": state.embedder.providers,
            "index_device": state.gallery.index_device,
            "cpu_int8_dot_product": state.embedder.cpu_int8_dot_product,
        },
    }
