package bridge

import (
	"fmt"
	"os"
)

// PrepareStateDir creates the state directory (mode 0700) if it is
// missing, and refuses one that others may write to: whoever can write
// there can replace the database (with the WhatsApp sessions) or the
// control socket, and so take the bridge over.
func PrepareStateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state_dir %s: %w", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("state_dir %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("state_dir %s is not a directory", dir)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("state_dir %s is writable by others (mode %04o): anyone could replace the database or the control socket; run chmod 700 %s", dir, perm, dir)
	}
	return nil
}
