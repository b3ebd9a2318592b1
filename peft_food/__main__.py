"""`python -m peft_food ...` is `peft-food-train ...`: the short module name torchrun and accelerate take.

torchrun --nproc_per_node=2 -m peft_food experiment=quickstart
"""

from peft_food.cli.train import cli

cli()
