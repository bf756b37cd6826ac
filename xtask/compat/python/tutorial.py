# The Plotly streaming tutorial ("Getting Started with Streaming", plot.ly/python/streaming-tutorial),
# cell by cell. `cargo xtask compat` runs it with run_tutorial.py, which executes each `# %%` cell in
# an IPython shell as a notebook would, against `plotstream serve` listening on port 80 (chart_studio's
# stream port is fixed) and on the port of COMPAT_SERVER.
#
# Changes from the notebook, and nothing else:
# - the configuration cell (the first one), which a user runs once per machine;
# - the two imports that plotly 4 moved to chart_studio (`go.Stream` and `go.Data` still exist);
# - `print(stream_ids)` for Python 2's `print stream_ids`;
# - a bounded loop (`for _ in range(120):`, 100 ms apart) instead of `while True:` (1 s apart).

# %% Configuration, once per machine (docs/clients.md): point chart_studio at plotstream.
import os
import chart_studio.tools as tls

server = os.environ["COMPAT_SERVER"]  # the origin of `plotstream serve`, e.g. http://127.0.0.1:9999
tls.set_credentials_file(username='demo', api_key='demokey123', stream_ids=['abcdef1234', 'zyxwvu9876'])
tls.set_config_file(plotly_domain=server, plotly_api_domain=server, plotly_streaming_domain='127.0.0.1')

# %%
import numpy as np
import chart_studio.plotly as py  # was: import plotly.plotly as py
import chart_studio.tools as tls  # was: import plotly.tools as tls
import plotly.graph_objs as go

# %%
stream_ids = tls.get_credentials_file()['stream_ids']
print(stream_ids)

# %%
help(go.Stream)

# %%
# Get stream id from stream id list
stream_id = stream_ids[0]

# Make instance of stream id object
stream_1 = go.Stream(
    token=stream_id,  # link stream id to 'token' key
    maxpoints=80      # keep a max of 80 pts on screen
)

# %%
# Initialize trace of streaming plot by embedding the unique stream_id
trace1 = go.Scatter(
    x=[],
    y=[],
    mode='lines+markers',
    stream=stream_1         # (!) embed stream id, 1 per trace
)

data = go.Data([trace1])

# Add title to layout object
layout = go.Layout(title='Time Series')

# Make a figure object
fig = go.Figure(data=data, layout=layout)

# Send fig to Plotly, initialize streaming plot, open new tab
py.iplot(fig, filename='python-streaming')

# %%
help(py.Stream)  # run help() of the Stream link object

# %%
# We will provide the stream link object the same token that's associated with the trace we wish to stream to
s = py.Stream(stream_id)

# We then open a connection
s.open()

# %%
# (*) Import module keep track and format current time
import datetime
import time

i = 0    # a counter
k = 5    # some shape parameter

# Delay start of stream by 5 sec (time to switch tabs)
time.sleep(5)

for _ in range(120):  # was: while True:

    # Current time on x-axis, random numbers on y-axis
    x = datetime.datetime.now().strftime('%Y-%m-%d %H:%M:%S.%f')
    y = (np.cos(k*i/50.)*np.cos(i/50.)+np.random.randn(1))[0]

    # Send data to your plot
    s.write(dict(x=x, y=y))

    #     Write numbers to stream to append current data on plot,
    #     write lists to overwrite existing data on plot

    time.sleep(0.1)  # was: time.sleep(1)  # plot a point every second
# Close the stream when done plotting
s.close()

# %%
# Embed never-ending time series streaming plot
tls.embed('streaming-demos','12')
