"""Knowledge distillation: a teacher's soft targets train a smaller student.

losses.py   the divergences and the mixed loss (soft targets + labels)
student.py  the student: a base model, optionally shrunk to N evenly spaced layers
teacher.py  finding and loading the teacher, the compatibility checks, the logits cache
trainer.py  the Trainer subclass whose compute_loss mixes the two losses
The stage itself (adaptctl/stages/distill.py) reads top to bottom over these.
"""
