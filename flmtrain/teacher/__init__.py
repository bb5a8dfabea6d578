"""FreeLM's teacher signal: proposition data, the teacher objective on the output layer, and its evaluation."""

from flm.train.teacher.config import TeacherConfig, TeacherSourceConfig
from flm.train.teacher.data import TeacherData, collate
from flm.train.teacher.objective import teacher_logits, teacher_sums

__all__ = ["TeacherConfig", "TeacherData", "TeacherSourceConfig", "collate", "teacher_logits", "teacher_sums"]
