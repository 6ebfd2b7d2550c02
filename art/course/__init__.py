"""art.course: dose accumulation over the treatment course (issue 20)."""
