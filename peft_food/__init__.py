"""peft_food: parameter-efficient fine-tuning (LoRA and eight other methods, or full) of Vision
Transformers on Food-101, configured by Hydra."""

__version__ = "0.1.0"
