module github.com/botframework/botframework/sdk/go

go 1.22
