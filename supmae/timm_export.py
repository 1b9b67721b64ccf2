"""`supmae.timm_export.save_timm`, kept at this path; the code lives in `supmae.interop.timm_export`."""

from .interop.timm_export import export_to_timm, save_timm, timm_kwargs, to_timm_state_dict


__all__ = ["export_to_timm", "save_timm", "timm_kwargs", "to_timm_state_dict"]
