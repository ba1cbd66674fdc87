"""Knowledge distillation: a teacher's soft targets train a smaller student.

losses.py   the divergences, the mixed loss (soft targets + labels) and the hidden-state term
student.py  the student: a base model, optionally shrunk to N evenly spaced layers; layer matching
teacher.py  finding and loading the teacher, the compatibility checks
cache.py    the teacher's logits, computed once and kept with the prepared data
augment.py  noisy copies of the training rows that only the teacher labels
trainer.py  the Trainer subclass whose compute_loss mixes the losses
The stage itself (adaptctl/stages/distill.py) reads top to bottom over these.
"""
