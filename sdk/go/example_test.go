package botframework_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/botframework/botframework/sdk/go"
)

// The spec's example: a model by name (or a .gguf path), one question, the answer.
func Example() {
	llm, err := botframework.New("smollm2-135m-instruct")
	if err != nil {
		log.Fatal(err)
	}
	defer llm.Close()
	res, _ := llm.Chat("Summarize this module", nil)
	fmt.Println(res.Text)
}

func ExampleClient_ChatStream() {
	llm, err := botframework.New("smollm2-135m-instruct", botframework.WithAutoStart())
	if err != nil {
		log.Fatal(err)
	}
	defer llm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel() // ends the stream and frees the server's slot
	stream, err := llm.ChatStreamContext(ctx, "Tell me a story", &botframework.ChatOptions{MaxTokens: 200})
	if err != nil {
		log.Fatal(err)
	}
	defer stream.Close()
	for stream.Next() {
		fmt.Print(stream.Delta().Content)
	}
	if err := stream.Err(); err != nil {
		log.Fatal(err)
	}
	fmt.Println("\ntokens:", stream.Result().Usage.CompletionTokens)
}

func ExampleClient_ChatInto() {
	type City struct {
		Name       string   `json:"name"`
		Country    string   `json:"country"`
		Population int      `json:"population"`
		Landmarks  []string `json:"landmarks,omitempty"`
	}
	llm, err := botframework.New("smollm2-135m-instruct")
	if err != nil {
		log.Fatal(err)
	}
	defer llm.Close()
	var city City
	if _, err := llm.ChatInto("Describe Paris.", &city, &botframework.ChatOptions{MaxTokens: 200}); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s (%s): %d people\n", city.Name, city.Country, city.Population)
}

func ExampleClient_Session() {
	llm, err := botframework.New("smollm2-135m-instruct")
	if err != nil {
		log.Fatal(err)
	}
	defer llm.Close()
	chat, err := llm.Session()
	if err != nil {
		log.Fatal(err)
	}
	defer chat.Close()
	chat.Chat("My name is Ann.", nil)
	res, _ := chat.Chat("What is my name?", nil) // the first turn's tokens come from the cache
	fmt.Println(res.Text, res.Usage.CachedTokens)
}

func ExampleNewTool() {
	type WeatherArgs struct {
		City string `json:"city" description:"the city's name"`
		Unit string `json:"unit,omitempty" enum:"celsius,fahrenheit"`
	}
	weather, err := botframework.NewTool("get_weather", "The current weather in a city", WeatherArgs{})
	if err != nil {
		log.Fatal(err)
	}
	params, _ := json.Marshal(weather.Parameters)
	fmt.Println(string(params))
	// Output:
	// {"type":"object","properties":{"city":{"type":"string","description":"the city's name"},"unit":{"type":"string","enum":["celsius","fahrenheit"]}},"required":["city"],"additionalProperties":false}
}

func ExampleSchemaOf() {
	type Answer struct {
		Reasoning  string   `json:"reasoning"`
		Answer     int      `json:"answer"`
		Confidence *float64 `json:"confidence,omitempty"`
	}
	schema, _ := json.MarshalIndent(botframework.MustSchemaOf(Answer{}), "", "  ")
	fmt.Println(string(schema))
	// Output:
	// {
	//   "type": "object",
	//   "properties": {
	//     "reasoning": {
	//       "type": "string"
	//     },
	//     "answer": {
	//       "type": "integer"
	//     },
	//     "confidence": {
	//       "type": "number"
	//     }
	//   },
	//   "required": [
	//     "reasoning",
	//     "answer"
	//   ],
	//   "additionalProperties": false
	// }
}

func ExampleAPIError() {
	// what a call returns when the server's queue is full
	var err error = &botframework.APIError{Status: 503, Type: "server_busy", Code: "server_busy",
		Message: "too many requests are waiting", RetryAfter: 2 * time.Second}

	var apiErr *botframework.APIError
	switch {
	case errors.Is(err, botframework.ErrBusy) && errors.As(err, &apiErr):
		fmt.Println("busy, retry after", apiErr.RetryAfter)
	case errors.Is(err, botframework.ErrServerUnavailable):
		fmt.Println("no server")
	}
	// Output: busy, retry after 2s
}
