// Command phonebridge links a WhatsApp account as a linked device and relays
// its chats to Matrix, IRC and a websocket API. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/phonebridge/phonebridge/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(); err != nil {
		var problems *config.Problems
		if errors.As(err, &problems) {
			fmt.Fprintf(os.Stderr, "phonebridge: the config has %d problem(s):\n%s\n", len(problems.Items), problems.Error())
		} else {
			fmt.Fprintf(os.Stderr, "phonebridge: %v\n", err)
		}
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal, a second one kills at once, as users expect
		// of Ctrl-C pressed twice.
		<-ctx.Done()
		stop()
	}()
	return newRootCommand().ExecuteContext(ctx)
}
