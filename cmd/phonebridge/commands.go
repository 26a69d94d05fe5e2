package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/phonebridge/phonebridge"
	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
	_ "github.com/phonebridge/phonebridge/connectors/all"
	"github.com/phonebridge/phonebridge/internal/logging"
)

// stopTimeout keeps shutdown inside the 5 s systemd and operators expect.
const stopTimeout = 4500 * time.Millisecond

type globalFlags struct {
	config    string
	logLevel  string
	logFormat string
}

func newRootCommand() *cobra.Command {
	var g globalFlags
	root := &cobra.Command{
		Use:   "phonebridge",
		Short: "Relay WhatsApp chats to Matrix, IRC and a websocket API",
		Long: "phonebridge links to a WhatsApp account as a linked device and relays its chats\n" +
			"both ways to Matrix, IRC and a websocket API, as configured in YAML.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVarP(&g.config, "config", "c", "", "config file (default: ./phonebridge.yaml, $XDG_CONFIG_HOME/phonebridge/config.yaml, /etc/phonebridge/config.yaml)")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "", "debug, info, warn or error (overrides log.level)")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "", "text or json (overrides log.format)")
	root.AddCommand(newRunCommand(&g), newConfigCommand(&g), newVersionCommand())
	return root
}

// load finds and loads the config and builds the logger it asks for.
func load(g *globalFlags) (*config.Config, *slog.Logger, error) {
	path, err := config.Find(g.config)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, nil, err
	}
	level, format := cfg.Log.Level, cfg.Log.Format
	if g.logLevel != "" {
		level = g.logLevel
	}
	if g.logFormat != "" {
		format = g.logFormat
	}
	log, err := logging.New(level, format, os.Stderr)
	if err != nil {
		return nil, nil, err
	}
	return cfg, log, nil
}

func newRunCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "run",
		Short: "Run the bridge daemon",
		Long:  "Run the bridge daemon in the foreground until SIGTERM or SIGINT; it stops within 5 seconds.",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := load(g)
			if err != nil {
				return err
			}
			log.Info("starting phonebridge", "version", version, "config", cfg.Path)
			b, err := bridge.Open(cfg, log)
			if err != nil {
				return err
			}
			return b.Run(cmd.Context(), stopTimeout)
		},
	}
}

func newConfigCommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Check or start a config file"}
	cmd.AddCommand(&cobra.Command{
		Use:   "validate",
		Short: "Check the config file and list every problem in it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, err := config.Find(g.config)
			if err != nil {
				return err
			}
			cfg, err := config.Load(path)
			if err != nil {
				return err
			}
			names := make([]string, 0, len(cfg.Connectors))
			for n := range cfg.Connectors {
				names = append(names, n)
			}
			sort.Strings(names)
			fmt.Fprintf(cmd.OutOrStdout(), "%s is valid: %d connector(s) %v, %d route(s)\n", path, len(names), names, len(cfg.Routes))
			return nil
		},
	}, &cobra.Command{
		Use:   "example",
		Short: "Print the documented example config",
		Long:  "Print the documented example config; start yours with\n  phonebridge config example > phonebridge.yaml",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write(phonebridge.ExampleConfig)
			return err
		},
	})
	return cmd
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			rev := ""
			if info, ok := debug.ReadBuildInfo(); ok {
				for _, s := range info.Settings {
					if s.Key == "vcs.revision" && len(s.Value) >= 12 {
						rev = " " + s.Value[:12]
					}
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "phonebridge %s%s (%s, %s/%s)\n", version, rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		},
	}
}
