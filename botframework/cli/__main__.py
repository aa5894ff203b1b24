import sys

from botframework.cli import main

sys.exit(main())
