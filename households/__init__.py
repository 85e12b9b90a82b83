"""The household app: what one home's meter says, in kWh and euros, live and over time.

It reads projections (InfluxDB's readings and alert history, the live ``meter.readings`` stream, the
market's log) and writes commands as events; it never imports the market, the console or privacy.
"""
