"""Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural Network": MLPs on Fashion-MNIST.

Paper (MNIST, its Section 3): a 1200-1200 ReLU teacher, strongly regularised
(dropout, inputs jittered by up to 2 pixels), makes 67 test errors; an
800-800 student trained alone on the labels 146; the same student trained on
the teacher's soft targets at T = 20, 74 (it closes 91 % of the gap).

Variants (append `_quick` for a CPU check, 10x fewer steps; `:quick` alone is
`distilled_quick`):
- `teacher`: MLP 1200-1200 with dropout after each hidden layer
  (TEACHER_DROPOUT) and training images shifted by up to TEACHER_SHIFT pixels
  each way (dataset.augment.shift), for TEACHER_EPOCHS epochs of Adam. The
  paper's teacher has dropout and 2-pixel jitter; on Fashion-MNIST the
  selection split preferred dropout 0.2 without jitter, chosen by
      python -m experiments.select --config=hinton2015_mlp:teacher \
          --grid=model.dropout_rate=0.2,0.5 --grid=dataset.augment.shift=0,2
  (paper/selection/hinton2015_mlp_teacher.json, one seed: 90.28 % against
  90.26 % at dropout 0.5, and 89.70 % and 88.02 % with the jitter);
- `student`: MLP 800-800, no regularisation, STUDENT_EPOCHS epochs, labels only;
- `distilled`: the same student, the same steps, trained on
  `knowledge_distillation` (compression/distillation.py): (1 - alpha) ·
  cross-entropy + alpha · T^2 · KL(teacher ‖ student) at temperature T, the
  teacher (runs/hinton2015_mlp_teacher/seed_K, the same seed) running inside
  the jitted step without gradients. `temperature=T` and `alpha=A` set them
  (defaults TEMPERATURE and ALPHA), e.g. `distilled,temperature=4,alpha=0.5`;
- `omit3`: the paper's omitted-class experiment: the distilled student with
  every training example of OMITTED_CLASS left out of its transfer set
  (dataset.drop_classes); `python -m experiments.omitted_class
  --config=hinton2015_mlp:omit3 --seeds=...` then raises that class's output
  bias by the offset chosen on the selection split and reports the errors.
Every variant holds out the selection split (pruning_common.SELECTION_SIZE
training examples), on which T and alpha are chosen; all report on test.
"""
from configs import common, default, distillation_common, pruning_common

KINDS = ("distilled", "teacher", "student", "omit3")
OMITTED_CLASS = 3  # Fashion-MNIST's "Dress"; the paper left out MNIST's 3s
TEACHER_HIDDEN = (1200, 1200)
STUDENT_HIDDEN = (800, 800)
TEACHER_DROPOUT = 0.2  # chosen on the selection split (see the docstring)
TEACHER_SHIFT = 0  # pixels, each way; the paper's 2 lost 0.6 points on the selection split
TEACHER_EPOCHS = 40  # dropout slows the teacher's training
STUDENT_EPOCHS = 20
# Chosen on the selection split (paper/selection/hinton2015_mlp_distilled.json, one seed):
#     python -m experiments.select --config=hinton2015_mlp:distilled \
#         --grid=loss.0.temperature=1,2,4,8,20 --grid=loss.0.alpha=0.5,0.9
# T = 1 with alpha = 0.9 scored 90.74 %, T = 4 with alpha = 0.5 90.72 %; the paper's T = 20, 90.10
# and 90.14 %. All ten points lie within 0.76 points.
TEMPERATURE = 1.0
ALPHA = 0.9
# {quick} is "" or "_quick" (a quick student learns from the quick teacher); {seed} is left for the
# driver, which reads the run's own seed there (experiments.provenance.seeded_path).
TEACHER_EXPORT = "runs/hinton2015_mlp_teacher{quick}/seed_{{seed}}/export/params.safetensors"


def get_config(arg: str = "distilled"):
    variant, arg = arg, common.parse_arg(arg, __file__, kind=("distilled", KINDS), quick=False, temperature=TEMPERATURE,
                           alpha=ALPHA)
    if arg.kind in ("teacher", "student") and (arg.temperature != TEMPERATURE or arg.alpha != ALPHA):
        raise common.arg_error(__file__, variant, "temperature and alpha set the distilled student only",
                               "distilled,temperature=T,alpha=A")
    scale = 10 if arg.quick else 1
    config = default.get_config()
    config.dataset.selection_size = pruning_common.SELECTION_SIZE
    config.train.log_every = 200
    config.train.checkpoint_every = 2000
    if arg.kind == "teacher":
        config.model = {"name": "mlp", "hidden": TEACHER_HIDDEN, "dropout_rate": TEACHER_DROPOUT}
        config.dataset.augment.shift = TEACHER_SHIFT
        config.train.num_steps = TEACHER_EPOCHS * pruning_common.STEPS_PER_EPOCH // scale
        return config
    config.model = {"name": "mlp", "hidden": STUDENT_HIDDEN}
    config.train.num_steps = STUDENT_EPOCHS * pruning_common.STEPS_PER_EPOCH // scale
    if arg.kind == "omit3":
        config.dataset.drop_classes = [OMITTED_CLASS]
    if arg.kind in ("distilled", "omit3"):
        config.teacher.export = TEACHER_EXPORT.format(quick="_quick" if arg.quick else "")
        config.loss = [distillation_common.soft_targets(arg.temperature, arg.alpha)]
    return config
