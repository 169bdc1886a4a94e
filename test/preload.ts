// Loaded before every test file (bunfig.toml): the test runner is an entry
// point like playbooks/*, so it registers the built-in roles.
import '../roles/index.ts';
