package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"sort"

	"github.com/spf13/cobra"

	"github.com/phonebridge/phonebridge"
	"github.com/phonebridge/phonebridge/config"
	_ "github.com/phonebridge/phonebridge/connectors/all"
	"github.com/phonebridge/phonebridge/internal/daemon"
	"github.com/phonebridge/phonebridge/internal/logging"
)

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
	root.AddCommand(newRunCommand(&g), newConfigCommand(&g), newVersionCommand(),
		newLinkCommand(&g), newLinksCommand(&g), newUnlinkCommand(&g), newChatsCommand(&g), newMatrixCommand(&g),
		newStatusCommand(&g), newReloadCommand(&g), newBackfillCommand(&g))
	return root
}

// load finds and loads the config and builds the logger it asks for. A
// quiet command (the CLI's, not the daemon's) logs warnings and worse
// unless --log-level says otherwise.
func load(g *globalFlags, quiet bool) (*config.Config, *slog.Logger, error) {
	cfg, err := loadConfig(g)
	if err != nil {
		return nil, nil, err
	}
	log, _, err := loadLeveled(g, quiet, cfg)
	return cfg, log, err
}

// loadConfig finds and loads the config.
func loadConfig(g *globalFlags) (*config.Config, error) {
	path, err := config.Find(g.config)
	if err != nil {
		return nil, err
	}
	return config.Load(path)
}

// loadLeveled builds the logger for cfg. Its level follows the config
// on a reload (level is non-nil) unless the command line set it.
func loadLeveled(g *globalFlags, quiet bool, cfg *config.Config) (_ *slog.Logger, level *slog.LevelVar, _ error) {
	name, format := cfg.Log.Level, cfg.Log.Format
	pinned := quiet || g.logLevel != ""
	if quiet {
		name = "warn"
	}
	if g.logLevel != "" {
		name = g.logLevel
	}
	if g.logFormat != "" {
		format = g.logFormat
	}
	lv, err := logging.ParseLevel(name)
	if err != nil {
		return nil, nil, err
	}
	level = new(slog.LevelVar)
	level.Set(lv)
	log, err := logging.NewLeveled(level, format, os.Stderr)
	if err != nil {
		return nil, nil, err
	}
	if pinned {
		level = nil
	}
	return log, level, nil
}

func newRunCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "run",
		Short: "Run the bridge daemon",
		Long:  "Run the bridge daemon in the foreground until SIGTERM or SIGINT; it stops within 5 seconds.\nSIGHUP makes it read the config again (as `phonebridge reload` does).",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(g)
			if err != nil {
				return err
			}
			log, level, err := loadLeveled(g, false, cfg)
			if err != nil {
				return err
			}
			log.Info("starting phonebridge", "version", version, "config", cfg.Path)
			var opts []daemon.Option
			if level != nil {
				opts = append(opts, daemon.WithLogLevel(level))
			}
			return daemon.Run(cmd.Context(), cfg, log, version, opts...)
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
