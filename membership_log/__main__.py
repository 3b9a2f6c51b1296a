from membership_log.launch import main

raise SystemExit(main())
