// Command chat runs the SDK's first example: ask a model one question and print the answer.
//
//	go run ./examples/chat                       # a server at $BOTFRAMEWORK_URL or :8000
//	go run ./examples/chat -autostart            # or start `botframework serve` if none runs
//	go run ./examples/chat -model path/to/model.gguf "Why is the sky blue?"
package main

import (
	"flag"
	"fmt"
	"log"
	"strings"

	"github.com/botframework/botframework/sdk/go"
)

func main() {
	model := flag.String("model", "smollm2-135m-instruct", "catalog name or .gguf path")
	autostart := flag.Bool("autostart", false, "start botframework serve when no server answers")
	flag.Parse()
	prompt := "Summarize this module"
	if flag.NArg() > 0 {
		prompt = strings.Join(flag.Args(), " ")
	}

	var opts []botframework.Option
	if *autostart {
		opts = append(opts, botframework.WithAutoStart())
	}
	llm, err := botframework.New(*model, opts...)
	if err != nil {
		log.Fatal(err)
	}
	defer llm.Close()

	res, err := llm.Chat(prompt, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Text)
}
