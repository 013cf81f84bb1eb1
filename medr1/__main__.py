from medr1.cli import main

raise SystemExit(main())
