"""The course tooling that instructors and CI run, kept apart from the teaching library.

* ``cli``      -- ``python -m kdutils ...`` (run, colab, info, assign, grade)
* ``nbrun``    -- execute the notebooks in order (``make run``)
* ``colab``    -- the notebooks' Colab badges and set-up cells, generated in one place
* ``colabsim`` -- run a notebook as Colab would, opened alone (``make test``)
* ``layout``   -- where notebooks, assignments, dist/ and grades/ live (every tool asks here)
* ``otterformat`` -- otter's markers and test files, read in one place (assign, grade, site, sitecheck)
* ``assign``   -- ``make assignments``: otter assign, the student version for Colab, the solution verified
* ``grade``    -- ``make grade``: one submission (``grade_one``), a folder of them (``grade_folder``)
* ``records``  -- what the grader reads back from the graded processes, trusting none of it
* ``feedback`` -- the instructor's and the student's feedback texts
* ``submissions`` -- finding each student's notebook in what an LMS download holds
* ``gradescope`` -- the Gradescope autograder zip of each assignment, and its ``run_autograder``
* ``sandbox``  -- the bubblewrap sandbox each submission runs in
* ``autograde`` -- grades one notebook question by question (the trusted test process, outside the sandbox)
* ``notebook_runner`` -- runs the notebook's cells (the only process that runs student code, in the sandbox)
* ``wire``     -- the pipe between them: plain data and calls, never a pickle from the notebook's side

The library (``kdutils.losses``, ``kdutils.data``, ...) never imports from here.
"""
