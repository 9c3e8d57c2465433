"""nbgrader settings for the smtplab course (copied into the course directory by grading/make_source.py)."""

c = get_config()  # noqa: F821 (nbgrader provides it)

c.CourseDirectory.course_id = "smtplab"
c.CourseDirectory.root = "."
# Each notebook is an assignment of its own name; only the notebooks themselves are released.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__"]
# A stripped answer leaves a statement that does nothing: the released notebook runs top to bottom like
# the course's own student notebooks, and an empty exercise scores 0 without stopping the others.
c.ClearSolutions.code_stub = {"python": "...  # YOUR CODE HERE"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
# The labs start servers on loopback: give slow machines time; every cell still runs in autograde.
c.ExecutePreprocessor.timeout = 180
c.Execute.timeout = 180
