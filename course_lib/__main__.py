import sys

from course_lib.course import main

sys.exit(main())
