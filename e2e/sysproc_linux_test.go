package e2e

import "syscall"

// sysProcAttr makes the kernel kill a child when the test binary dies, so a
// crashed or interrupted test run leaves no process behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// scriptProcAttr asks the kernel to send run.sh SIGTERM if the test binary
// dies: its trap then stops what it started.
func scriptProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
