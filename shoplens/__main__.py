from shoplens.cli import main

raise SystemExit(main())
