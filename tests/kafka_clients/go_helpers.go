// Shared by the Go client programs here: install.sh builds each one together
// with this file (`go build -o PROG PROG.go go_helpers.go`).
package main

import (
	"fmt"
	"os"
)

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", a...)
	os.Exit(1)
}

func check(err error, what string) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}
