//go:build !linux

package testservers

import "syscall"

func procAttr() *syscall.SysProcAttr { return nil }
