from genppl.cli.main import main

raise SystemExit(main())
