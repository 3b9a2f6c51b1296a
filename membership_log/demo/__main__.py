from membership_log.demo.run import main

raise SystemExit(main())
