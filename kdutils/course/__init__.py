"""The course tooling that instructors and CI run, kept apart from the teaching library.

* ``cli``      -- ``python -m kdutils ...`` (run, colab, info, assign, grade)
* ``nbrun``    -- execute the notebooks in order (``make run``)
* ``colab``    -- the notebooks' Colab badges and set-up cells, generated in one place
* ``colabsim`` -- run a notebook as Colab would, opened alone (``make test``)
* ``grading``  -- otter assign, and grading a class (``make assignments``, ``make grade``)
* ``submissions`` -- finding each student's notebook in what an LMS download holds
* ``gradescope`` -- the Gradescope autograder zip of each assignment, and its ``run_autograder``
* ``sandbox``  -- the bubblewrap sandbox each submission runs in
* ``autograde`` -- grades one notebook question by question (the trusted test process, outside the sandbox)
* ``notebook_runner`` -- runs the notebook's cells (the only process that runs student code, in the sandbox)
* ``wire``     -- the pipe between them: plain data and calls, never a pickle from the notebook's side

The library (``kdutils.losses``, ``kdutils.data``, ...) never imports from here.
"""
