import sys

from device_emulator.bench.run import main

sys.exit(main())
