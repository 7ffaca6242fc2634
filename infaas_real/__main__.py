from infaas_real.cli import main

raise SystemExit(main())
