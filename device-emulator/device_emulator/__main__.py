import sys

from device_emulator.cli import main

sys.exit(main())
