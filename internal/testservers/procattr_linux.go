package testservers

import "syscall"

// procAttr has the kernel kill a server if the test binary dies without
// running its cleanups (a -timeout panic), so no server outlives its test.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
