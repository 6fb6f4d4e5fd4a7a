"""Speed and memory modes applied to a pipeline right after it is loaded: the compiled path (`compiled`, with LoRA
avatars hot-swapped into fixed slots by `lora_slots`) and the low-VRAM mode (`low_vram`)."""

from pictale.engine.speed.options import SpeedOptions, speed_options

__all__ = ["SpeedOptions", "speed_options"]
