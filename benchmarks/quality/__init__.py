"""Quality benchmark of issue 16: hpa's training defaults against a plain PyTorch loop, on data
sets hpa was not tuned on (``generate``), with every epoch's predictions recorded so checkpoint
selection and threshold policies are compared afterwards (``run``, ``report``)."""
