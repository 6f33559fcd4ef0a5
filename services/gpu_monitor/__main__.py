from services.gpu_monitor.app import main

if __name__ == "__main__":
    main()
